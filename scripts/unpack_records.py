"""Lay the study's stage records (docs/records/<stage>, gradleak.stage_record) out as job folders,
the layout scripts/collect.py reads and where the figures find the reconstructions they keep.

    python scripts/unpack_records.py docs/records results/records   # then: scripts/collect.py results/records
"""
import argparse
import shutil
import sys
from pathlib import Path

from gradleak import stage_record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", type=Path, help="the folder of stage records (docs/records)")
    parser.add_argument("out", type=Path, help="where the job folders go (emptied first)")
    args = parser.parse_args(argv)
    stages = sorted(p.parent for p in args.records.glob(f"*/{stage_record.JOBS}"))
    if not stages:
        print(f"unpack_records: {args.records} holds no stage record ({stage_record.JOBS})", file=sys.stderr)
        return 1
    shutil.rmtree(args.out, ignore_errors=True)
    for folder in stages:
        jobs = stage_record.unpack(folder, args.out / folder.name)
        print(f"unpack_records: {folder.name}: {jobs} jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
