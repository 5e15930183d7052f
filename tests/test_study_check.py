"""scripts/check_study.py on a copy of this checkout: the gate judges what a change does.

Edits that cannot move a number of the study (a docstring, a renamed private function, a
new column of the terminal summary) pass with no rerun; edits that can (the stall
tolerance, a defense's rounding, the smoke training's learning rate) fail and name exactly
the sweep stages whose jobs run the changed code or config. The copy's own src/ is probed
(scripts/fingerprint.py puts it first on sys.path), not the installed package."""
import re
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALL_STAGES = {"datasets", "undefended", "noise", "prune", "precision", "dpsgd", "batch", "rounds", "text", "later",
              "secure"}
TRAINED = {"undefended", "noise", "prune", "precision", "dpsgd", "rounds", "later"}  # train=smoke jobs


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


@contextmanager
def edited(copy: Path, *edits: tuple[str, str, str]):
    """Replace `old` by `new` in each (path, old, new) for the duration of a with-block."""
    before = {path: (copy / path).read_text() for path, _, _ in edits}
    try:
        for path, old, new in edits:
            text = (copy / path).read_text()
            assert old in text, f"{old!r} not in {path}: update this test"
            (copy / path).write_text(text.replace(old, new))
        yield
    finally:
        for path, text in before.items():
            (copy / path).write_text(text)


def stages_named(stderr: str) -> set[str]:
    """The stages the gate says to rerun (its last line lists them)."""
    found = re.search(r"the committed results of (.+) are not this code's", stderr)
    assert found, stderr
    return {s.partition("@")[2] for s in found.group(1).split()}


NEUTRAL = [
    ("src/gradleak/engine/attack.py", '"""One attack on T targets with R restarts each, on `device`."""',
     '"""One attack on T targets with R restarts each, on `device` (edited docstring)."""'),
    ("src/gradleak/victim/defenses/precision.py", "_int8_round_trip", "_quantize_int8"),  # every use
    ("src/gradleak/jobs/terminal.py", "f\" {'evals':>6}  {'exact':>5}", "f\" {'evals':>6} {'B':>2}  {'exact':>5}"),
    ("src/gradleak/jobs/terminal.py", "f\" {t['evals']:>6}  {exact:>5}",
     "f\" {t['evals']:>6} {len(t['label']):>2}  {exact:>5}"),
]


def test_edits_that_move_no_number_pass_with_no_rerun(checkout):
    with edited(checkout, *NEUTRAL):
        done = check(checkout)
    assert done.returncode == 0, done.stderr
    assert "agree with docs/fingerprint" in done.stdout and "dvc.lock matches" in done.stdout


@pytest.mark.parametrize("edit,stages", [
    (("src/gradleak/victim/defenses/precision.py", "torch.round(flat / safe)", "torch.trunc(flat / safe)"),
     {"precision", "text"}),  # the text stage attacks int8 updates too
    (("conf/train/smoke.yaml", "lr: 1.0e-2 ", "lr: 2.0e-2 "), TRAINED),
], ids=["int8-rounding", "smoke-lr"])
def test_edits_that_can_move_a_number_fail_and_name_the_stages(checkout, edit, stages):
    with edited(checkout, edit):
        done = check(checkout)
    assert done.returncode == 1
    assert stages_named(done.stderr) == stages
    assert "scripts/fingerprint.py --write && GRADLEAK_DATA_DIR=../shared/data dvc repro" in done.stderr


def test_a_stop_rule_and_the_report_and_figures_fail_together(checkout):
    """The stall tolerance is read by every DLG job; the report code and docs/figures are
    dvc.lock's (one run of the gate checks both: it is the slow part)."""
    with edited(checkout, ("conf/attack/dlg.yaml", "stall_tolerance: 1.0e-2", "stall_tolerance: 2.0e-2"),
                ("src/gradleak/report/verdict_figures.py", '"""', '"""Edited. '),
                ("src/gradleak/intervals.py", "CONFIDENCE = 0.95", "CONFIDENCE = 0.90"),
                ("docs/figures/table_defenses.md", "|", "| edited", )):
        done = check(checkout)
    assert done.returncode == 1
    assert stages_named(done.stderr) == ALL_STAGES
    assert "figures: dep src/gradleak/report/verdict_figures.py modified" in done.stderr
    assert "figures: dep src/gradleak/intervals.py modified" in done.stderr  # a module outside report/
    assert "figures: out docs/figures modified" in done.stderr
