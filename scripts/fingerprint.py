"""The study gate's behaviour fingerprint (gradleak/gate): probe this checkout's code, compare
with the committed docs/fingerprint/<stage>.json, or record it.

    python scripts/fingerprint.py            # exit 1, naming the stages to rerun, when they differ
    python scripts/fingerprint.py --write    # record the stages that differ (then: dvc repro)
    python scripts/fingerprint.py --coverage # the probes' line coverage of what the study runs

The probed code is this checkout's src/ (put first on sys.path), whatever is installed.
"""
import argparse
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # probe this checkout, not an installed copy
RERUN = "GRADLEAK_DATA_DIR=../shared/data dvc repro"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="record the stages whose fingerprint moved")
    parser.add_argument("--coverage", action="store_true", help="report the probes' line coverage")
    parser.add_argument("--workers", type=int, default=0, help="probe processes (default: up to 2)")
    args = parser.parse_args()
    if args.coverage:  # imported first: coverage starts before the measured modules load
        from gradleak.gate.coverage import report

        return report(ROOT, profile())
    return check(ROOT, write=args.write, workers=args.workers)


def profile() -> str:
    return yaml.safe_load((ROOT / "params.yaml").read_text())["profile"]


def check(root: Path, write: bool = False, workers: int = 0) -> int:
    """Compare (or record) every stage; returns 1 when a stage's committed results are not this code's."""
    from gradleak.gate import fingerprint as fp

    start = time.perf_counter()
    fresh = fp.fingerprint(profile(), workers)
    moved = {}
    added = []  # stages that only gained probes: recorded without a rerun
    for stage, data in fresh.items():
        lines = fp.differences(fp.read(root, stage), data)
        if write and lines:
            fp.write(root, stage, data)
            if fp.only_added(lines) and stage != fp.OUTSIDE_STUDY and (root / "dvc.lock").exists():
                fp.relock(root, stage)
                added.append(stage)
                continue
        if lines:
            moved[stage] = lines
    wall = time.perf_counter() - start
    locked = yaml.safe_load((root / "dvc.lock").read_text())["stages"] if (root / "dvc.lock").exists() else {}
    probes = len({n for d in fresh.values() for n in d["probes"]})
    jobs = sum(len(d["jobs"]) for d in fresh.values())
    if added:
        print(f"fingerprint: new probes recorded for {' '.join(added)}; every committed one agrees, so "
              "dvc.lock records the new files without a rerun")
    if not moved:
        print(f"fingerprint: {jobs} jobs and {probes} probes agree with docs/fingerprint "
              f"(tolerance {fp.RTOL:g} relative, {fp.ATOL:g} absolute; {wall:.0f} s)")
        return 0
    out = sys.stdout if write else sys.stderr
    for stage, lines in moved.items():
        name = stage if stage == fp.OUTSIDE_STUDY else fp.dvc_stage(stage, locked)
        print(f"{name}: {len(lines)} change(s), e.g.", file=out)
        for line in lines[:5]:
            print(f"  {line}", file=out)
    stages = " ".join(fp.dvc_stage(s, locked) for s, lines in moved.items()
                      if s != fp.OUTSIDE_STUDY and (write or not fp.only_added(lines)))
    if write:
        print(f"fingerprint: recorded {' '.join(moved)}" + (f"; rerun:\n    {RERUN}" if stages else
                                                            " (no stage runs it: nothing to rerun)"))
        return 0
    if stages:
        print(f"fingerprint: the committed results of {stages} are not this code's; record and rerun:\n"
              f"    python scripts/fingerprint.py --write && {RERUN}", file=sys.stderr)
    if any(fp.only_added(lines) for s, lines in moved.items() if s != fp.OUTSIDE_STUDY):
        print("fingerprint: new probes only (every committed one agrees): record them with "
              "python scripts/fingerprint.py --write; dvc.lock takes them without a rerun", file=sys.stderr)
    if fp.OUTSIDE_STUDY in moved:
        print("fingerprint: code that no study stage runs behaves differently (library); if that is "
              "meant, record it (python scripts/fingerprint.py --write): nothing to rerun", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
