"""Run one stage of the defense study (dvc.yaml) as Hydra multiruns of run.py, and keep its record.

    python scripts/sweep.py noise        # -> docs/records/noise (in git; gradleak.stage_record)
                                         #    from results/sweeps/noise/<n>_<overrides>/ (raw, not in git)

Which sweeps a stage runs is gradleak.jobs.study's (conf/study/<profile>.yaml composed with
conf/study/stages.yaml; params.yaml names the profile). Jobs run in parallel on every core
(Hydra's joblib launcher); a stage of one-job sweeps (datasets) runs its sweeps side by side.
"""
import argparse
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from gradleak import stage_record
from gradleak.jobs.study import load_study, stage_sweeps
from gradleak.jobs.sweeps import sweep_size

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = ROOT / "results" / "sweeps"
RECORDS = ROOT / "docs" / "records"


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
    raw = SWEEPS / args.stage
    shutil.rmtree(raw, ignore_errors=True)  # a job of an earlier grid must not enter the record
    codes = run_sweeps(sweeps, data_dir, raw)
    failures = [rc != 0 and not (rc == 2 and sweep.skip_missing) for sweep, rc in zip(sweeps, codes)]
    if any(failures):
        print(f"sweep: {args.stage}'s record not written (a sweep failed); its job folders are in {raw}",
              file=sys.stderr)
        return 1
    return keep_record(args.stage, sweeps, codes, raw)


def keep_record(stage: str, sweeps, codes: list[int], raw: Path) -> int:
    """Write docs/records/<stage> once every job of the sweeps that ran has its metrics.json."""
    expected = sum(sweep_size(list(s.overrides)) for s, rc in zip(sweeps, codes) if rc == 0)
    found = len(stage_record.job_folders(raw))
    if found != expected:
        print(f"sweep: {stage} has {found} job records of {expected}; its record not written "
              f"(the job folders are in {raw})", file=sys.stderr)
        return 1
    out = RECORDS / stage
    shutil.rmtree(out, ignore_errors=True)
    jobs, with_images = stage_record.write(raw, out, stage)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"sweep: {stage}'s record: {jobs} jobs ({with_images} with gallery images), "
          f"{size / 1e6:.2f} MB in {out.relative_to(ROOT)}")
    return 0


def run_sweeps(sweeps, data_dir: str, out: Path) -> list[int]:
    """Each sweep's exit code. Sweeps of one job each run side by side, one per core; the
    first runs alone, so that it creates the tracking database the others then share."""
    def run(sweep, parallel=True):
        return multirun(list(sweep.overrides), data_dir, out / sweep.folder, sweep.skip_missing, parallel)

    cores = parallel_jobs()
    if cores < 2 or len(sweeps) < 2 or any(sweep_size(list(s.overrides)) > 1 for s in sweeps):
        return [run(sweep) for sweep in sweeps]
    first = run(sweeps[0], parallel=False)
    with ThreadPoolExecutor(max_workers=cores) as pool:
        return [first, *pool.map(lambda sweep: run(sweep, parallel=False), sweeps[1:])]


def parallel_jobs() -> int:
    """Jobs in parallel on every core this process may use, each with GRADLEAK_THREADS
    torch threads (default 1), so that jobs x threads = cores."""
    threads = max(1, int(os.environ.get("GRADLEAK_THREADS", "1")))
    return max(1, len(os.sched_getaffinity(0)) // threads)


def multirun(overrides: list[str], data_dir: str, out: Path, skip_missing=False, parallel=True) -> int:
    n_jobs = parallel_jobs() if parallel else 1
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}"] if n_jobs > 1 else []
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *overrides, f"data_dir={data_dir}",
           f"hydra.sweep.dir={out}", *launcher]
    print("+", " ".join(cmd[1:]), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc == 2 and skip_missing:
        print(f"sweep: skipped {out.name} (not available here; see the error above)", flush=True)
    elif rc:
        print(f"sweep: {out.name} failed with exit code {rc}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
