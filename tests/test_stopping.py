"""Stop rules: what they stop, why, and that stopping changes nothing but the budget spent."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from gradleak.engine.attack import Attack, run_attack
from gradleak.engine.optimizers import RUNNING, STOPPED
from gradleak.engine.stopping import REASONS, StopRules
from gradleak.victim.data import load_split
from gradleak.victim.defenses import defense_from_config
from gradleak.victim.models import LeNet

ATTACK = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "attack" / "dlg.yaml")
NO_DEFENSE = defense_from_config({"name": "none"})
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def digits():
    split = load_split(OmegaConf.create({"name": "digits"}), "test")
    return split.images[:4].reshape(4, 1, 1, 8, 8), split.labels[:4].reshape(4, 1)


def victim():
    torch.manual_seed(0)
    return LeNet(1, 8, 10)


def rules(**overrides):
    return OmegaConf.merge(ATTACK.stop, overrides)


def fake_state(loss):
    loss = torch.tensor(loss, dtype=torch.float64)
    return SimpleNamespace(loss=loss, status=torch.full(loss.shape, RUNNING))


def test_losing_restart_stops_far_restarts_after_warmup_never_the_leader():
    r = StopRules(rules(restart_warmup=3, restart_factor=10.0, converged_loss=0.0), restarts=3, k=6, device=CPU)
    initial = torch.ones(6, dtype=torch.float64)
    state = fake_state([1e-3, 5e-3, 2e-2, 0.5, 0.4, 0.45])  # target 0: restart 2 is 20x its leader
    r.apply(1, state, initial)
    assert (state.status == RUNNING).all()  # before the warm-up nothing drops out
    r.apply(3, state, initial)
    assert state.status.tolist() == [RUNNING, RUNNING, STOPPED, RUNNING, RUNNING, RUNNING]
    assert r.reasons(state.status)[2] == "losing_restart" and int(r.step[2]) == 3


def test_a_converged_restart_settles_its_target_and_the_others_stop():
    r = StopRules(rules(converged_loss=1e-8, restart_warmup=100), restarts=2, k=4, device=CPU)
    state = fake_state([1e-9, 0.3, 0.2, 0.3])
    r.apply(1, state, torch.ones(4, dtype=torch.float64))
    assert r.reasons(state.status) == ["converged", "losing_restart", "budget", "budget"]


def test_stalled_means_no_relative_progress_over_the_window():
    r = StopRules(rules(stall_steps=2, stall_tolerance=1e-3, converged_loss=0.0, restart_warmup=100),
                  restarts=1, k=2, device=CPU)
    initial = torch.ones(2, dtype=torch.float64)
    state = fake_state([1.0, 1.0])
    for step, losses in enumerate([[1.0, 1.0], [0.9995, 0.5], [0.9992, 0.25]], start=1):
        state.loss = torch.tensor(losses, dtype=torch.float64)
        r.apply(step, state, initial)
    assert r.reasons(state.status) == ["stalled", "budget"]  # 0.08% in 2 steps vs 75%


def test_a_stopped_problem_keeps_the_result_it_had_at_its_stop_step(digits):
    images, labels = digits
    cfg = OmegaConf.merge(ATTACK, {"restarts": 2, "steps": 30})
    attack = Attack(cfg, victim(), images, labels, NO_DEFENSE, 0, CPU)
    history = [attack.optimizer.state.x.clone()]
    for step in range(1, cfg.steps + 1):
        attack.optimizer.step()
        attack.apply_stop_rules(step)
        history.append(attack.optimizer.state.x.clone())
    stop_step = attack.stop_rules.step.tolist()
    assert sum(s > 0 for s in stop_step) >= 4  # the rules did stop problems here
    for p, s in enumerate(stop_step):
        if s > 0:
            assert torch.equal(history[-1][p], history[s][p])
            assert not torch.equal(history[s][p], history[s - 1][p])  # it moved until then
    final = attack.results()
    kept = attack.best_problems().tolist()
    for t, p in enumerate(kept):
        recon = attack.layout.images(history[max(stop_step[p], 0) or -1][p:p + 1]).clamp(0, 1)
        assert final[t]["mse"] == pytest.approx(float(((recon - attack.truth[t]) ** 2).mean()), rel=1e-5)


def test_rules_that_never_fire_change_nothing(digits):
    images, labels = digits
    cfg = OmegaConf.merge(ATTACK, {"restarts": 2, "steps": 15})
    idle = {"converged_loss": 0.0, "stall_steps": 1000, "restart_warmup": 1000}
    runs = [run_attack(OmegaConf.merge(cfg, {"stop": stop}), victim(), images, labels, NO_DEFENSE, 0,
                       accelerator="cpu", progress_bar=False)
            for stop in ({"enabled": False}, {"enabled": True, **idle})]
    for a, b in zip(*(r.targets for r in runs)):
        assert (a["mse"], a["loss"], a["evals"]) == (b["mse"], b["loss"], b["evals"])
    torch.testing.assert_close(runs[0].reconstructions, runs[1].reconstructions, atol=0, rtol=0)


def test_the_outcome_counts_every_problem_by_why_it_ended(digits):
    images, labels = digits
    out = run_attack(OmegaConf.merge(ATTACK, {"steps": 100}), victim(), images, labels, NO_DEFENSE, 0,
                     accelerator="cpu", progress_bar=False)
    assert set(out.stopped) == set(REASONS)
    assert sum(out.stopped.values()) == 4 * ATTACK.restarts
    assert out.stopped["converged"] >= 4  # every undefended digit converges
    assert all(t["success"] and t["stop_reason"] == "converged" for t in out.targets)
