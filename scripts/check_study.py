"""Check that the committed study is the committed code's, judged by what the code does.

    python scripts/check_study.py      # exit 1, naming the stages to rerun, when a rerun is due

Three checks. The behaviour fingerprint (scripts/fingerprint.py): every job's config and the
probes of the code the study's jobs run, compared with docs/fingerprint (configs exactly,
probe numbers within a stated tolerance), so a docstring, a rename or a new column of a
summary passes and a change that can move a number fails. Then dvc.lock against the working
tree: the sweep stages depend on docs/fingerprint and params.yaml, the report stages on their
code, and docs/figures must be what the figures stage produced. results/ stays out of git,
so its absence (a fresh clone) or local changes there are not failures. Then the answer
itself: the tables and figures rebuilt from the committed stage records (docs/records) must
equal docs/figures byte for byte, so a change in any code the report runs is caught wherever
it lives. .ci/run runs this before the tests.
"""
import filecmp
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNTRACKED = "results/"  # the study's intermediate outputs: not in git, not checked
RERUN = ("GRADLEAK_DATA_DIR=../shared/data dvc repro   # then commit dvc.lock with docs/figures "
         "(docs/study.md: The study gate)")


def dvc_status(root: Path) -> dict:
    done = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=root,
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"dvc status failed: {done.stderr.strip() or done.stdout.strip()}")
    return json.loads(done.stdout or "{}")


def problems(status: dict) -> list[str]:
    """One line per change that makes the committed figures another code's."""
    lines = []
    for stage, changes in status.items():
        for change in changes:
            if isinstance(change, str):  # "changed command", "always changed", ...
                lines.append(f"{stage}: {change}")
                continue
            for kind, paths in change.items():
                for path, how in paths.items():
                    if path.startswith(UNTRACKED):
                        continue
                    if isinstance(how, dict):  # params: {name: status}
                        how = ", ".join(f"{name} {s}" for name, s in how.items())
                    lines.append(f"{stage}: {kind.removeprefix('changed ')[:-1]} {path} {how}")
    return lines


def regenerated(root: Path) -> list[str]:
    """The files of docs/figures that the report, rebuilt from the committed records, does not
    give as committed (missing, extra or different)."""
    with tempfile.TemporaryDirectory(prefix="gradleak-answer-") as tmp:
        steps = [["scripts/unpack_records.py", "docs/records", f"{tmp}/records"],
                 ["scripts/collect.py", f"{tmp}/records", "--out", tmp],
                 ["scripts/figures.py", "--results", tmp, "--out", f"{tmp}/figures"]]
        for step in steps:
            done = subprocess.run([sys.executable, *step], cwd=root, capture_output=True, text=True)
            if done.returncode:
                return [f"{step[0]} failed: {done.stderr.strip()[-300:]}"]
        committed, fresh = root / "docs" / "figures", Path(tmp) / "figures"
        names = sorted({p.name for p in committed.iterdir()} | {p.name for p in fresh.iterdir()})
        _, differ, missing = filecmp.cmpfiles(committed, fresh, names, shallow=False)
        return [f"docs/figures/{name} differs" for name in differ] + [
            f"docs/figures/{name} {'is not rebuilt' if (committed / name).exists() else 'is missing'}"
            for name in missing]


def main() -> int:
    behaviour = subprocess.run([sys.executable, str(ROOT / "scripts" / "fingerprint.py")], cwd=ROOT)
    if not (ROOT / "dvc.lock").exists():
        print(f"check_study: dvc.lock is missing; run\n    {RERUN}", file=sys.stderr)
        return 1
    found = problems(dvc_status(ROOT))
    if found:
        print("check_study: the committed figures are not this code's (since dvc.lock):", file=sys.stderr)
        for line in found:
            print(f"  {line}", file=sys.stderr)
        print(f"rerun the study:\n    {RERUN}", file=sys.stderr)
    stale = regenerated(ROOT)
    if stale:
        print("check_study: docs/figures is not what the committed records give:", file=sys.stderr)
        for line in stale:
            print(f"  {line}", file=sys.stderr)
        print("rebuild it:\n    dvc repro figures   # then commit docs/figures and dvc.lock", file=sys.stderr)
    if found or behaviour.returncode or stale:
        return 1
    print("check_study: dvc.lock matches the fingerprint, params, report code and docs/figures, "
          "and docs/figures is what the committed records give")
    return 0


if __name__ == "__main__":
    sys.exit(main())
