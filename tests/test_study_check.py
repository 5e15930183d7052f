"""scripts/check_study.py on a copy of this checkout: the committed dvc.lock matches the
committed code, and an edit to what a study stage runs, without a rerun, fails the check."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """The files git would clone (tracked, plus new files not ignored), in a fresh git repo."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\0")
    copy = tmp_path_factory.mktemp("checkout")
    for name in filter(None, listed):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    return copy


def check(copy: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/check_study.py"], cwd=copy, capture_output=True, text=True)


def edited(path: Path, text: str):
    """Append `text` to `path` for the duration of a with-block."""
    class Edit:
        def __enter__(self):
            self.before = path.read_bytes()
            path.write_bytes(self.before + text.encode())

        def __exit__(self, *exc):
            path.write_bytes(self.before)
    return Edit()


def test_the_committed_study_is_the_committed_codes(checkout):
    done = check(checkout)
    assert done.returncode == 0, done.stderr
    assert "dvc.lock matches" in done.stdout


@pytest.mark.parametrize("path,stage", [
    ("src/gradleak/engine/attack.py", "sweep@noise: dep src/gradleak/engine modified"),
    ("conf/attack/ig.yaml", "sweep@prune: dep conf modified"),
    ("src/gradleak/report/verdicts.py", "figures: dep src/gradleak/report modified"),
    ("docs/figures/table_defenses.md", "figures: out docs/figures modified"),
])
def test_an_edit_without_a_rerun_fails_and_says_what_and_how(checkout, path, stage):
    with edited(checkout / path, "\n# edited\n" if not path.endswith(".md") else "\nedited\n"):
        done = check(checkout)
    assert done.returncode == 1
    assert stage in done.stderr
    assert "dvc repro" in done.stderr


def test_a_changed_param_fails(checkout):
    params = checkout / "params.yaml"
    before = params.read_text()
    params.write_text(before.replace("profile: smoke", "profile: paper"))
    try:
        done = check(checkout)
    finally:
        params.write_text(before)
    assert done.returncode == 1
    assert "sweep@undefended: dep params.yaml profile modified" in done.stderr


@pytest.mark.parametrize("path", ["tests/test_report.py", "README.md", "scripts/bench.py"])
def test_what_no_stage_runs_needs_no_rerun(checkout, path):
    with edited(checkout / path, "\n# edited\n"):
        assert check(checkout).returncode == 0


def test_a_missing_results_folder_is_not_a_failure(checkout):
    assert not (checkout / "results").exists()  # a fresh clone: results/ is not in git
    assert check(checkout).returncode == 0
