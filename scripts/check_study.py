"""Check that the committed study is the committed code's: dvc.lock against the working tree.

    python scripts/check_study.py      # exit 1, saying what changed, when a rerun is due

Fails when a dependency of a study stage (code, config, params, command) changed since
dvc.lock was written, or when docs/figures no longer is what dvc.lock says the figures
stage produced. results/ stays out of git, so its absence (a fresh clone) or local
changes there are not failures. .ci/run runs this before the tests.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNTRACKED = "results/"  # the study's intermediate outputs: not in git, not checked
RERUN = ("GRADLEAK_DATA_DIR=../shared/data dvc repro   # then commit dvc.lock with docs/figures "
         "(README: Reproducing the paper)")


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
    if not (ROOT / "dvc.lock").exists():
        print(f"check_study: dvc.lock is missing; run\n    {RERUN}", file=sys.stderr)
        return 1
    found = problems(dvc_status(ROOT))
    if found:
        print("check_study: the committed figures are not this code's (since dvc.lock):", file=sys.stderr)
        for line in found:
            print(f"  {line}", file=sys.stderr)
        print(f"rerun the study:\n    {RERUN}", file=sys.stderr)
        return 1
    print("check_study: dvc.lock matches the code, configs, params and docs/figures")
    return 0


if __name__ == "__main__":
    sys.exit(main())
