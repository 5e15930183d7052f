"""Build the figures and the defense table from the collected CSVs (run collect first).

    python scripts/figures.py --results results/ --out results/figures/
"""
import argparse
import sys
from pathlib import Path

from gradleak.report.figures import make_all


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="results", type=Path,
                        help="folder with summary.csv, targets.csv, curves.csv")
    parser.add_argument("--out", default="results/figures", type=Path, help="where figures go")
    parser.add_argument("--datasets-stage", default="datasets",
                        help="undefended stage for the reconstruction and MSE figures")
    parser.add_argument("--defense-stage", default=None,
                        help="stage for the defense figure (default: most defended jobs)")
    args = parser.parse_args(argv)
    try:
        written = make_all(args.results, args.out, args.datasets_stage, args.defense_stage)
    except FileNotFoundError as err:
        print(f"figures: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"figures: wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
