"""Run one stage of the defense study (dvc.yaml) as a Hydra multirun of run.py.

    python scripts/sweep.py noise        # -> results/sweeps/noise/<n>_<overrides>/metrics.json

The study is a Hydra config: conf/study/<profile>.yaml (seeds, dataset, attack and
training sizes) composed with conf/study/stages.yaml (the grids); params.yaml names the
profile. Jobs run in parallel on every core (Hydra's joblib launcher).
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "results" / "sweeps"
STUDY_DIR = ROOT / "conf" / "study"
SURVEYS = ("datasets", "batch")  # sized by the profile's survey, attack only
ROUNDS = "rounds"  # attacks rounds of the profile's training (the profile's `rounds`)


def load_study(profile: str):
    """conf/study/<profile>.yaml, composed through Hydra's compose API."""
    with initialize_config_dir(config_dir=str(STUDY_DIR), version_base="1.3"):
        return compose(config_name=profile)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    params = yaml.safe_load(args.params.read_text())
    study = load_study(params["profile"])
    data_dir = os.environ.get("GRADLEAK_DATA_DIR", params["data_dir"])
    out = SWEEPS / args.stage
    survey = args.stage in SURVEYS
    size = study.survey if survey else study
    seeds = "seed=" + ",".join(map(str, size.seeds))
    if args.stage == "datasets":
        return run_datasets(study, data_dir, seeds, out)
    if args.stage not in study.stages:
        print(f"sweep: stage={args.stage}: allowed datasets, {', '.join(study.stages)}", file=sys.stderr)
        return 2
    train = [] if survey else list(study.train)
    sizes = [f"dataset={study.dataset}", *size.attack, *train, seeds]
    if args.stage == ROUNDS:  # the training's rounds and clients the profile names
        sizes += ["attack.round=" + ",".join(map(str, study.rounds.at)), f"attack.num_targets={study.rounds.clients}"]
    grids = study.stages[args.stage]
    if not isinstance(grids, DictConfig):  # one sweep, or named sweeps in out/<name>
        return multirun([*grids, *sizes], data_dir, out)
    failures = sum(multirun([*grid, *sizes], data_dir, out / name) != 0 for name, grid in grids.items())
    return int(failures > 0)


def run_datasets(study, data_dir, seeds, out: Path) -> int:
    """Undefended attack on every dataset that loads here; one sub-sweep per dataset."""
    jobs = {name: [f"dataset={name}"] for name in study.datasets}
    jobs.update({name: list(overrides) for name, overrides in study.extra_datasets.items()
                 if _path_exists(overrides)})
    failures = 0
    for name, overrides in jobs.items():
        rc = multirun([*overrides, "defense=none", *study.survey.attack, seeds], data_dir, out / name,
                      skip_missing=True)
        failures += rc not in (0, 2)
    return int(failures > 0)


def _path_exists(overrides) -> bool:
    paths = [o.split("=", 1)[1] for o in overrides if o.startswith("path=")]
    return all((ROOT / p).exists() for p in paths)


def parallel_jobs() -> list[str]:
    """Jobs in parallel on every core this process may use, each with GRADLEAK_THREADS
    torch threads (default 1), so that n_jobs x threads = cores."""
    threads = max(1, int(os.environ.get("GRADLEAK_THREADS", "1")))
    n_jobs = max(1, len(os.sched_getaffinity(0)) // threads)
    return [] if n_jobs == 1 else ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"]


def multirun(overrides: list[str], data_dir: str, out: Path, skip_missing=False) -> int:
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *overrides, f"data_dir={data_dir}",
           f"hydra.sweep.dir={out}", *parallel_jobs()]
    print("+", " ".join(cmd[1:]), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc == 2 and skip_missing:
        print(f"sweep: skipped {out.name} (not available here; see the error above)", flush=True)
    elif rc:
        print(f"sweep: {out.name} failed with exit code {rc}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
