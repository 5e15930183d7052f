"""Collect the jobs of finished sweeps into flat CSV tables.

Each job writes `metrics.json` into its Hydra output folder
(`<sweeps root>/<stage>/<n>_<overrides>/metrics.json`). Collecting turns them into:

- summary.csv: one row per job; every config knob (dotted names, e.g. `defense.scale`),
  every attack and training metric, and the job's identity (stage, job, seed, setting,
  attacker and how its defense setting is named: family, strength, labels and ranks) with
  paths to its snapshots and reconstruction grid;
- targets.csv: one row per attacked target of each job;
- curves.csv: one row per optimizer step of each job (long format);
- text.csv: one row per attacked sentence of each text job (task=text), which the image
  tables leave out: its setting, attacker, verdicts, true and recovered text.

Paths in the tables are relative to the folder the tables are written to, so figures
can be built from the CSVs alone.
"""
import os
from pathlib import Path

import pandas as pd

from gradleak.job_keys import defines_job, key_of
from gradleak.job_record import JobRecord

METRICS_FILE = "metrics.json"
# Keys that both the attack and the training block report: prefixed with their block.
SHARED_KEYS = {"wall_s"}
CURVE_COLUMNS = ["step", "evals", "loss_median", "mse_median", "success_rate"]
# How each job's defense setting is named: written by the job from the defense's registration
# (victim/defenses), so the report needs no table of its own.
SETTING_COLUMNS = ["family", "family_title", "family_rank", "strength", "strength_label",
                   "strength_rank", "variance"]
# Besides the overrides of where and how a job ran (job_keys.RUN_KEYS): the seed, which the
# setting pools, and the attacker's choice (attack=ig, attack.adaptive=true), which the
# `attacker` column names, so that one defense setting has one `setting` whichever attacker
# attacked it.
POOLED = ("seed", "attack", "attack.adaptive")


def find_jobs(root: Path) -> list[Path]:
    """All job folders under `root` that hold a metrics.json, in a stable order."""
    return sorted(p.parent for p in Path(root).rglob(METRICS_FILE))


def stage_and_job(job_dir: Path, root: Path) -> tuple[str, str]:
    """The sweep folder name (stage) and the job folder below it.

    `root` is normally the sweeps root (root/<stage>/<job>); when it is one sweep
    folder itself (root/<job>), the stage is that folder's name.
    """
    parts = job_dir.relative_to(root).parts
    if len(parts) >= 2:
        return parts[0], "/".join(parts[1:])
    return Path(root).resolve().name, parts[0] if parts else "."


def setting(overrides: list[str]) -> str:
    """The job's overrides without its seed and machine paths: the jobs that differ only by
    seed share it."""
    kept = sorted(_without_folder(o) for o in overrides if defines_job(o) and key_of(o) not in POOLED)
    return " ".join(kept) or "(defaults)"


def _without_folder(override: str) -> str:
    """path=/some/where/file.npz -> path=file.npz: the file names the data, its folder the machine."""
    key, _, value = override.partition("=")
    return f"{key}={Path(value).name}" if key.lstrip("+~") == "path" else override


def _metric_columns(block: dict | None, group: str) -> dict:
    if not block:
        return {}
    return {(f"{group}_{k}" if k in SHARED_KEYS else k): v
            for k, v in block.items() if not isinstance(v, (dict, list))}


def _relpath(path: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()
    except ValueError:  # another drive (Windows)
        return path.resolve().as_posix()


def _identity(m: JobRecord, stage: str, job: str) -> dict:
    return {"stage": stage, "job": job, "seed": m.config.get("seed"),
            **{k: m.defense.get(k) for k in SETTING_COLUMNS}, "setting": setting(m.overrides),
            "attacker": m.attacker}


def summary_row(m: JobRecord, ident: dict, job_dir: Path, out: Path) -> dict:
    row = {**ident, "overrides": " ".join(m.overrides),
           "job_dir": _relpath(job_dir, out),
           "snapshots": _relpath(job_dir / m.snapshots["file"], out),
           "grid": _relpath(job_dir / m.grid, out),
           "mlflow_run_id": m.mlflow.get("run_id")}
    row |= {k: v for k, v in m.config.items() if k != "seed"}
    row |= _metric_columns(m.attack, "attack")
    row |= _metric_columns(m.train, "train")
    return row


def target_rows(m: JobRecord, ident: dict) -> list[dict]:
    return [{**ident, "dataset.name": m.config.get("dataset.name"), **t} for t in m.targets]


def curve_rows(m: JobRecord, ident: dict) -> pd.DataFrame:
    curve = pd.DataFrame(m.curve)
    curve = curve[[c for c in CURVE_COLUMNS if c in curve]]
    return curve.assign(stage=ident["stage"], job=ident["job"])


def collect(root: Path, out: Path) -> dict[str, pd.DataFrame]:
    """Read every job under `root`; paths in the tables are made relative to `out`."""
    root, out = Path(root), Path(out)
    summary, targets, curves, text = [], [], [], []
    for job_dir in find_jobs(root):
        m = JobRecord.read(job_dir / METRICS_FILE)
        ident = _identity(m, *stage_and_job(job_dir, root))
        if m.config.get("task") == "text":
            text += sentence_rows(m, ident)
            continue
        summary.append(summary_row(m, ident, job_dir, out))
        targets += target_rows(m, ident)
        curves.append(curve_rows(m, ident))
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    if len(curves_df):
        curves_df = curves_df[["stage", "job"] + [c for c in CURVE_COLUMNS if c in curves_df]]
    return {"summary": pd.DataFrame(summary), "targets": pd.DataFrame(targets),
            "curves": curves_df, "text": pd.DataFrame(text)}


# what a text job's defended training recorded (test_acc: held-out masked-token accuracy)
TEXT_TRAINING = ("test_acc", "test_loss", "baseline_test_acc", "utility_drop", "epsilon")


def sentence_rows(m: JobRecord, ident: dict) -> list[dict]:
    """A text job's sentences, with its setting and what the job's attack and data were."""
    keep = ("attack.name", "attack.match", "attack.bag_of_words", "attack.steps", "attack.discrete_steps",
            "dataset.name", "model.name")
    trained = {k: (m.train or {}).get(k) for k in TEXT_TRAINING}
    return [{**ident, **{k: m.config.get(k) for k in keep}, "wall_s": m.attack.get("wall_s"), **trained,
             **{k: v for k, v in t.items() if k != "index"}, "row": t["index"][0]} for t in m.targets]


def collect_roots(roots: list[Path], out: Path) -> dict[str, pd.DataFrame]:
    """`collect` over several sweeps roots (e.g. the study and a later sweep of another seed):
    stages of the same name pool, so their settings aggregate over the jobs of all roots."""
    parts = [collect(root, out) for root in roots]
    return {name: pd.concat([p[name] for p in parts if len(p[name])], ignore_index=True)
            if any(len(p[name]) for p in parts) else pd.DataFrame() for name in parts[0]}


def write_tables(tables: dict[str, pd.DataFrame], out: Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, df in tables.items():
        paths.append(out / f"{name}.csv")
        df.to_csv(paths[-1], index=False)
    return paths


def read_tables(results: Path) -> dict[str, pd.DataFrame]:
    """The CSVs written by `write_tables`; a missing or empty one reads as an empty frame."""
    tables = {}
    for name in ("summary", "targets", "curves", "text"):
        path = Path(results) / f"{name}.csv"
        ok = path.exists() and path.stat().st_size > 1
        tables[name] = pd.read_csv(path, keep_default_na=True) if ok else pd.DataFrame()
    return tables
