"""Write the study's answer (docs/answer.md) from the committed tables, and fill the sections of
README.md and docs/study.md marked `<!-- answer:NAME -->` with it (gradleak.report.answer).

    python scripts/answer.py                      # the tables of docs/figures, -later, -secure
    python scripts/answer.py --check              # exit 1 when a marked section is not the tables'
"""
import argparse
import sys
from pathlib import Path

from gradleak.report.answer import answer_markdown, fill, sections

ROOT = Path(__file__).resolve().parents[1]
TABLES = [ROOT / "docs" / f for f in ("figures", "figures-later", "figures-secure")]  # the main folder first
ANSWER = ROOT / "docs" / "answer.md"
CARRIERS = [ROOT / "README.md", ROOT / "docs" / "study.md"]  # the files that carry marked sections


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a file is stale")
    args = parser.parse_args(argv)
    found = sections(TABLES)
    wanted = {ANSWER: answer_markdown(found)}
    try:
        wanted |= {path: fill(path.read_text(), found) for path in CARRIERS}
    except KeyError as exc:
        print(f"answer: a marker names no section of the answer: {exc.args[0]} (known: {', '.join(found)})",
              file=sys.stderr)
        return 2
    stale = [path for path, text in wanted.items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"answer: {path.relative_to(ROOT)} is not what the tables give; run python scripts/answer.py",
                  file=sys.stderr)
        return int(bool(stale))
    for path in stale:
        path.write_text(wanted[path])
        print(f"answer: wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
