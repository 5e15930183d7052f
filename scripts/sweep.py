"""Run one stage of the defense study (dvc.yaml) as Hydra multiruns of run.py.

    python scripts/sweep.py noise        # -> results/sweeps/noise/<n>_<overrides>/metrics.json

Which sweeps a stage runs is gradleak.jobs.study's (conf/study/<profile>.yaml composed with
conf/study/stages.yaml; params.yaml names the profile). Jobs run in parallel on every core
(Hydra's joblib launcher).
"""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import yaml

from gradleak.jobs.study import load_study, stage_sweeps

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "results" / "sweeps"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage")
    parser.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    args = parser.parse_args()
    params = yaml.safe_load(args.params.read_text())
    data_dir = os.environ.get("GRADLEAK_DATA_DIR", params["data_dir"])
    try:
        sweeps = stage_sweeps(load_study(params["profile"]), args.stage, root=ROOT)
    except KeyError as exc:
        print(f"sweep: {exc.args[0]}", file=sys.stderr)
        return 2
    failures = 0
    for sweep in sweeps:
        rc = multirun(list(sweep.overrides), data_dir, SWEEPS / args.stage / sweep.folder, sweep.skip_missing)
        failures += rc != 0 and not (rc == 2 and sweep.skip_missing)
    return int(failures > 0)


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
