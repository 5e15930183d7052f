"""The study's behaviour fingerprint: what each stage's jobs are and what their code does.

For every stage of dvc.yaml, docs/fingerprint/<stage>.json holds
- `jobs`: every job of the stage (its overrides) with a hash of its resolved config (where
  files live, threads and tracking left out): any change of a value a job reads, from
  conf/ or from the study's grids, shows here exactly;
- `probes`: the records of the probes (gate/probes.py) whose code the stage's jobs run.
The sweep stages depend on these files, not on the source tree. `check` probes the
working tree afresh and compares: configs exactly, probe numbers within RTOL and ATOL. A
change that agrees reruns nothing; one that does not names the stages to rerun, and
`write` records it (then `dvc repro` reruns exactly those stages).
"""
import json
import math
import multiprocessing
import os
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from gradleak import project_root
from gradleak.gate.probes import LIBRARY, check_names, probes_of, quiet, run_probe
from gradleak.jobs.hydra_cli import expand_sweep, parse_overrides
from gradleak.jobs.study import STAGES, load_study, stage_sweeps
from gradleak.jobs.tracking import hashed_config
from gradleak.victim.cache import content_hash

FOLDER = Path("docs") / "fingerprint"
# Code no stage runs (the baselines, ResNet-20, FedAvg's local steps, a GPU's vectorized
# clients): probed and checked too, recorded in library.json, which no stage depends on.
OUTSIDE_STUDY = "library"
# |fresh - committed| <= RTOL x max(|fresh|, |committed|) + ATOL, per number. Runs of the
# same code on other machines, thread counts and convolution kernels differ by far less
# (docs/benchmarks.md: the study gate's tolerance); docs/architecture.md: what a change below it can hide.
RTOL, ATOL = 1e-4, 1e-6
# The stages whose snapshots along the attack a figure draws (report/figures.py:
# reconstructions); every other figure reads a job's final reconstruction only.
SNAPSHOT_FIGURES = {"datasets"}


def study_jobs(profile: str) -> dict[str, list[list[str]]]:
    """Each stage's jobs, as the overrides its sweeps expand to."""
    study = load_study(profile)
    jobs = {}
    for stage in STAGES:
        jobs[stage] = [job for sweep in stage_sweeps(study, stage)
                       for job in expand_sweep(parse_overrides(list(sweep.overrides)))]
    GlobalHydra.instance().clear()
    return jobs


def job_identity(cfg) -> str:
    """Hash of what a job computes: the resolved config without where files go."""
    data = hashed_config(cfg)
    data["train"].pop("cache_dir", None)  # an absolute path: another per checkout
    return content_hash(data)


def plan(profile: str) -> dict[str, dict]:
    """Per stage: {jobs: {overrides: config hash}, probes: the probe names its jobs need}."""
    stages, study, composed = {}, study_jobs(profile), {}
    with initialize_config_dir(config_dir=str(project_root() / "conf"), version_base="1.3"):
        for stage, jobs in study.items():
            hashes, names = {}, set()
            for job in jobs:
                cfg = _compose_job(job, composed)
                hashes[" ".join(job)] = job_identity(cfg)
                names |= probes_of(cfg)
            if stage in SNAPSHOT_FIGURES:
                names.add("snapshots")
            stages[stage] = {"jobs": hashes, "probes": sorted(names)}
    GlobalHydra.instance().clear()
    return stages


def _compose_job(job: list[str], composed: dict):
    """The job's config; jobs that differ in their seed alone are composed once (a seed
    override sets the top-level `seed` and nothing else)."""
    seeds = [o for o in job if o.startswith("seed=")]
    rest = tuple(o for o in job if not o.startswith("seed="))
    if rest not in composed:
        composed[rest] = compose(config_name="config", overrides=[*rest, "data_dir=data"])
    cfg = composed[rest].copy()
    for o in seeds:
        cfg.seed = int(o.split("=", 1)[1])
    return cfg


def fingerprint(profile: str, workers: int = 0, progress=lambda name: None) -> dict[str, dict]:
    """Each stage's fingerprint: its jobs' config hashes and its probes' records. The probe
    processes start (import torch, Lightning, MLflow) while the jobs are composed."""
    workers = workers or min(2, os.cpu_count() or 1)
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_warm_up) if workers > 1 else None
    try:
        stages = plan(profile)
        stages[OUTSIDE_STUDY] = {"jobs": {}, "probes": sorted(LIBRARY)}
        names = sorted({n for s in stages.values() for n in s["probes"]})
        check_names(names)
        records = {}
        for name, record in zip(names, pool.imap(_probe_in_tmp, names) if pool else map(_probe_in_tmp, names)):
            progress(name)
            records[name] = record
    finally:
        if pool:
            pool.close()
            pool.join()
    return {stage: {"profile": profile, "jobs": s["jobs"], "probes": {n: records[n] for n in s["probes"]}}
            for stage, s in stages.items()}


def _warm_up() -> None:
    import mlflow  # noqa: F401 - the job probes' tracking
    import pytorch_lightning  # noqa: F401
    import torch

    import gradleak.gate.probes  # noqa: F401

    torch.set_num_threads(1)


def _probe_in_tmp(name: str) -> dict:
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="gradleak-probe-") as work, quiet():
        return run_probe(name, Path(work))


# --- reading, writing, comparing -------------------------------------------------------------------

def path_of(root: Path, stage: str) -> Path:
    return root / FOLDER / f"{stage}.json"


def read(root: Path, stage: str) -> dict | None:
    path = path_of(root, stage)
    return json.loads(path.read_text()) if path.exists() else None


def write(root: Path, stage: str, data: dict) -> None:
    path = path_of(root, stage)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def only_added(lines: list[str]) -> bool:
    """The changes are new probes alone: the committed results stay this code's."""
    return bool(lines) and all(line.startswith("probe added: ") for line in lines)


def relock(root: Path, stage: str) -> None:
    """Record the stage's new fingerprint file in dvc.lock as its dependency, without a
    rerun (only for fingerprints that gained probes while every committed one agrees)."""
    import hashlib

    import yaml

    lock_path = root / "dvc.lock"
    lock = yaml.safe_load(lock_path.read_text())
    data = path_of(root, stage).read_bytes()
    for dep in lock["stages"][dvc_stage(stage, lock["stages"])]["deps"]:
        if dep["path"] == str(FOLDER / f"{stage}.json"):
            dep.update(md5=hashlib.md5(data).hexdigest(), size=len(data))
    lock_path.write_text(yaml.safe_dump(lock, sort_keys=False))


def dvc_stage(stage: str, dvc_stages) -> str:
    """The name dvc.yaml gives a study stage's sweep: `sweep@noise`, or `unrecorded@text` for
    the stages that keep no record in git yet."""
    names = [name for name in dvc_stages if name.partition("@")[2] == stage]
    return names[0] if names else f"sweep@{stage}"


def differences(committed: dict | None, fresh: dict) -> list[str]:
    """What moved, one line each (empty: the stage's committed results are this code's)."""
    if committed is None:
        return ["no committed fingerprint"]
    out = []
    if committed.get("profile") != fresh["profile"]:
        out.append(f"profile {committed.get('profile')} -> {fresh['profile']}")
    old, new = committed["jobs"], fresh["jobs"]
    out += [f"job added: {j}" for j in new if j not in old]
    out += [f"job removed: {j}" for j in old if j not in new]
    out += [f"job config changed: {j}" for j in new if j in old and old[j] != new[j]]
    old, new = committed["probes"], fresh["probes"]
    out += [f"probe added: {n}" for n in new if n not in old]
    out += [f"probe removed: {n}" for n in old if n not in new]
    for name in new:
        if name in old:
            out += [f"probe {name}: {line}" for line in _compare(old[name], new[name], "")]
    return out


def _compare(a, b, where: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where or '.'} keys {sorted(a)} -> {sorted(b)}"]
        return [line for k in a for line in _compare(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where} length {len(a)} -> {len(b)}"]
        return [line for i, (x, y) in enumerate(zip(a, b)) for line in _compare(x, y, f"{where}[{i}]")]
    if isinstance(a, float) or isinstance(b, float):
        if _close(a, b):
            return []
    elif a == b and type(a) is type(b):
        return []
    return [f"{where} {a!r} -> {b!r}"]


def _close(a, b) -> bool:
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b)):
        return False
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    if math.isinf(a) or math.isinf(b):
        return a == b
    return abs(a - b) <= RTOL * max(abs(a), abs(b)) + ATOL
