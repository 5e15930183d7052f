"""Check that the committed study is the committed code's, judged by what the code does.

    python scripts/check_study.py      # exit 1, naming the stages to rerun, when a rerun is due

Two checks. The behaviour fingerprint (scripts/fingerprint.py): every job's config and the
probes of the code the study's jobs run, compared with docs/fingerprint (configs exactly,
probe numbers within a stated tolerance), so a docstring, a rename or a new column of a
summary passes and a change that can move a number fails. Then dvc.lock against the working
tree: the sweep stages depend on docs/fingerprint and params.yaml, the report stages on their
code, and docs/figures must be what the figures stage produced. results/ stays out of git,
so its absence (a fresh clone) or local changes there are not failures. .ci/run runs this
before the tests.
"""
import json
import subprocess
import sys
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
    if found or behaviour.returncode:
        return 1
    print("check_study: dvc.lock matches the fingerprint, params, report code and docs/figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
