"""The measurement scripts' overrides of our attack (scripts/bench.py, scripts/profile_calls.py):
what a weaker or stronger default would cost is measured on the attack it names."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench import default_attack_config  # noqa: E402


@pytest.mark.fast
def test_overrides_change_only_the_keys_they_name():
    cfg = default_attack_config(["restarts=1", "stop.converged_loss=3e-8"])
    assert cfg.restarts == 1 and cfg.stop.converged_loss == 3e-8
    assert cfg.stop.stall_steps == 20 and cfg.stop.enabled is True  # the rest of stop: kept
    assert default_attack_config().restarts == 3


@pytest.mark.fast
def test_a_misspelt_override_is_an_error():
    with pytest.raises(SystemExit, match="restart=1: Key 'restart' is not in struct"):
        default_attack_config(["restart=1"])


def test_profile_calls_runs_the_attack_it_is_given():
    out = subprocess.run([sys.executable, "scripts/profile_calls.py", "--dataset", "digits", "--targets", "3",
                          "--threads", "1", "restarts=2", "steps=4", "stop.restart_delay=0"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "attack: restarts=2 steps=4 stop.restart_delay=0" in out
    assert "targets: 3 x 2 restarts, exact (MSE < 0.001)" in out
    stopped = next(line for line in out.splitlines() if line.startswith("problems stopped by: "))
    counts = [int(part.rsplit(" ", 1)[1]) for part in stopped.removeprefix("problems stopped by: ").split(", ")]
    assert sum(counts) == 6  # every problem of 3 targets x 2 restarts, each with its reason
    steps = int(next(line for line in out.splitlines() if line.startswith("steps: ")).split()[1])
    assert steps <= 4  # all restarts at once: the loop runs the budget of 4 steps at most
