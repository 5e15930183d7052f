"""Collect every job's metrics.json under a sweeps root into results/{summary,targets,curves}.csv.

    python scripts/collect.py [results/sweeps] --out results/
"""
import argparse
import sys
from pathlib import Path

from gradleak.report.collect import collect, write_tables


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default="results/sweeps", type=Path,
                        help="folder holding the sweep folders (default: results/sweeps)")
    parser.add_argument("--out", default="results", type=Path, help="where the CSVs go")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"collect: root={args.root} is not a folder; pass the sweeps root", file=sys.stderr)
        return 2
    tables = collect(args.root, args.out)
    if tables["summary"].empty:
        print(f"collect: root={args.root} holds no metrics.json; run the sweeps first",
              file=sys.stderr)
        return 1
    for path in write_tables(tables, args.out):
        print(f"collect: wrote {path}")
    s = tables["summary"]
    print(f"collect: {len(s)} jobs, {s['stage'].nunique()} stages, "
          f"{len(tables['targets'])} targets, {len(tables['curves'])} curve points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
