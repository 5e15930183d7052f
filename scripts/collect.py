"""Collect every job's metrics.json under sweeps roots into results/{summary,targets,curves,text}.csv.

    python scripts/collect.py [results/sweeps ...] --out results/

Several roots pool: their stages of the same name aggregate together (a later sweep of
another seed, in <root>/<stage>/<name>, adds to the study's settings).
"""
import argparse
import sys
from pathlib import Path

from gradleak.job_record import RecordError
from gradleak.report.collect import collect_roots, write_tables


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="*", default=[Path("results/sweeps")], type=Path,
                        help="folders holding the sweep folders (default: results/sweeps)")
    parser.add_argument("--out", default="results", type=Path, help="where the CSVs go")
    args = parser.parse_args(argv)
    for root in args.roots:
        if not root.is_dir():
            print(f"collect: root={root} is not a folder; pass the sweeps root", file=sys.stderr)
            return 2
    try:
        tables = collect_roots(args.roots, args.out)
    except RecordError as exc:  # a metrics.json of another version of this code
        print(f"collect: {exc}", file=sys.stderr)
        return 2
    if tables["summary"].empty and tables["text"].empty:
        print(f"collect: {' '.join(map(str, args.roots))} holds no metrics.json; run the sweeps first",
              file=sys.stderr)
        return 1
    for path in write_tables(tables, args.out):
        print(f"collect: wrote {path}")
    s, text = tables["summary"], tables["text"]
    print(f"collect: {len(s)} jobs, {s['stage'].nunique() if len(s) else 0} stages, "
          f"{len(tables['targets'])} targets, {len(tables['curves'])} curve points"
          + (f"; {len(text)} sentences of text jobs" if len(text) else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
