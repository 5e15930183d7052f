"""Stop rules: what they stop, why, and that stopping changes nothing but the budget spent."""
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from gradleak.engine.attack import Attack, run_attack
from gradleak.engine.optimizers import RUNNING, STOPPED, WAITING
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
    return SimpleNamespace(loss=loss, status=torch.full(loss.shape, RUNNING),
                           steps=torch.zeros(loss.shape, dtype=torch.long))


def fake_step(r, state, initial, budget=10**9):
    """Every running problem (within its budget) ends a step of its own; the rules judge them."""
    ended = ((state.status == RUNNING) & (state.steps < budget)).nonzero().squeeze(1)
    state.steps[ended] += 1
    r.apply(ended, state, initial)


@pytest.mark.fast
def test_losing_restart_stops_far_restarts_after_warmup_never_the_leader():
    r = StopRules(rules(restart_warmup=3, restart_factor=10.0, converged_loss=0.0, restart_delay=0), restarts=3, k=6,
                  steps=100, device=CPU)
    initial = torch.ones(6, dtype=torch.float64)
    state = fake_state([1e-3, 5e-3, 2e-2, 0.5, 0.4, 0.45])  # target 0: restart 2 is 20x its leader
    for _ in (1, 2):
        fake_step(r, state, initial)
        assert (state.status == RUNNING).all()  # before the warm-up nothing drops out
    fake_step(r, state, initial)
    assert state.status.tolist() == [RUNNING, RUNNING, STOPPED, RUNNING, RUNNING, RUNNING]
    assert r.reasons(state.status)[2] == "losing_restart" and int(r.step[2]) == 3


@pytest.mark.fast
def test_a_converged_restart_settles_its_target_and_the_others_stop():
    r = StopRules(rules(converged_loss=1e-8, restart_warmup=100, restart_delay=0), restarts=2, k=4, steps=100,
                  device=CPU)
    state = fake_state([1e-9, 0.3, 0.2, 0.3])
    fake_step(r, state, torch.ones(4, dtype=torch.float64))
    assert r.reasons(state.status) == ["converged", "losing_restart", "budget", "budget"]


@pytest.mark.fast
def test_stalled_means_no_relative_progress_over_the_window():
    r = StopRules(rules(stall_steps=2, stall_tolerance=1e-3, converged_loss=0.0, restart_warmup=100),
                  restarts=1, k=2, steps=100, device=CPU)
    initial = torch.ones(2, dtype=torch.float64)
    state = fake_state([1.0, 1.0])
    for losses in [[1.0, 1.0], [0.9995, 0.5], [0.9992, 0.25]]:
        state.loss = torch.tensor(losses, dtype=torch.float64)
        fake_step(r, state, initial)
    assert r.reasons(state.status) == ["stalled", "budget"]  # 0.08% in 2 steps vs 75%


@pytest.mark.fast
def test_a_stopped_problem_keeps_the_result_it_had_at_its_stop_step(digits):
    images, labels = digits
    cfg = OmegaConf.merge(ATTACK, {"restarts": 2, "steps": 30})
    attack = Attack(cfg, victim(), images, labels, NO_DEFENSE, 0, CPU)
    history = [attack.optimizer.state.x.clone()]
    for _ in range(attack.loop_steps):  # in lockstep: every running problem ends one step
        ended = attack.optimizer.state.running.nonzero().squeeze(1)
        attack.optimizer.step()
        attack.stop_ended(ended)
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
    idle = {"converged_loss": 0.0, "stall_steps": 1000, "restart_warmup": 1000, "restart_delay": 0}
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


def run_fake(r, state, losses_at, loop_steps, initial):
    """Step the rules `loop_steps` times; a running problem's loss is losses_at(p, own step)."""
    for _ in range(loop_steps):
        for p in (state.status == RUNNING).nonzero().flatten().tolist():
            state.loss[p] = losses_at(p, int(state.steps[p]) + 1)
        fake_step(r, state, initial, budget=r.steps)


@pytest.mark.fast
def test_staggered_restarts_start_in_turn_and_each_gets_the_whole_budget():
    steps, delay = 10, 3
    r = StopRules(rules(converged_loss=0.0, stall_steps=1000, restart_warmup=1000, restart_delay=delay),
                  restarts=3, k=6, steps=steps, device=CPU)
    state = fake_state([float("nan")] * 6)
    r.hold_restarts(state)
    assert state.status.tolist() == [RUNNING, WAITING, WAITING] * 2
    started = {}
    for step in range(1, r.loop_steps + 1):
        for p in (state.status == RUNNING).nonzero().flatten().tolist():
            started.setdefault(p, step)
            state.loss[p] = 1.0 / (1 + int(state.steps[p]))
        fake_step(r, state, torch.ones(6, dtype=torch.float64), budget=steps)
    assert r.loop_steps == steps + 2 * delay
    assert [started[p] for p in range(6)] == [1, 1 + delay, 1 + 2 * delay] * 2
    assert state.steps.tolist() == [steps] * 6
    assert r.reasons(state.status) == ["budget"] * 6


@pytest.mark.fast
def test_a_target_settled_by_its_first_restart_never_starts_the_others():
    r = StopRules(rules(converged_loss=1e-8, stall_steps=1000, restart_warmup=1000, restart_delay=2),
                  restarts=3, k=6, steps=20, device=CPU)
    state = fake_state([float("nan")] * 6)
    r.hold_restarts(state)
    # target 0's first restart converges at its own step 2 (before the delay); target 1's does not
    run_fake(r, state, lambda p, own: 1e-9 if p == 0 and own >= 2 else 0.5, r.loop_steps,
             torch.ones(6, dtype=torch.float64))
    assert r.reasons(state.status)[:3] == ["converged", "not_started", "not_started"]
    assert state.steps.tolist()[:3] == [2, 0, 0]
    assert state.steps.tolist()[3:] == [20, 20, 20]


@pytest.mark.fast
def test_a_late_restart_is_judged_against_its_siblings_at_the_same_age():
    # restart 0: loss 1 / own step^2; restart 1 starts 10 steps later and is 5x lower at every age
    r = StopRules(rules(converged_loss=0.0, stall_steps=1000, restart_warmup=5, restart_factor=1.5,
                        restart_delay=10), restarts=2, k=2, steps=30, device=CPU)
    state = fake_state([float("nan")] * 2)
    r.hold_restarts(state)
    run_fake(r, state, lambda p, own: (0.2 if p else 1.0) / own**2, 15, torch.ones(2, dtype=torch.float64))
    # at step 15 restart 1 is 5 steps old and above 1.5x restart 0's best now, but 5x below
    # what restart 0 had after 5 steps: both run on
    assert int(state.steps[1]) == 5 and float(state.loss[1]) > 1.5 * float(state.loss[0])
    assert state.status.tolist() == [RUNNING, RUNNING]
    run_fake(r, state, lambda p, own: (0.2 if p else 1.0) / own**2 if p or own < 20 else 1 / 400, 10,
             torch.ones(2, dtype=torch.float64))
    # restart 0 stuck at 1/400 from its step 20; restart 1 at age 15 is at 0.2/225, under 1/400 / 1.5
    assert state.status.tolist() == [STOPPED, RUNNING]
    assert r.reasons(state.status)[0] == "losing_restart"


def test_staggered_restarts_keep_every_verdict_and_cost_fewer_evaluations(digits):
    images, labels = digits
    cfg = OmegaConf.merge(ATTACK, {"steps": 100})
    runs = [run_attack(OmegaConf.merge(cfg, {"stop": {"restart_delay": d}}), victim(), images, labels, NO_DEFENSE,
                       0, accelerator="cpu", progress_bar=False) for d in (0, 20)]
    together, staggered = ([t["evals_all_restarts"] for t in r.targets] for r in runs)
    assert [t["success"] for t in runs[1].targets] == [t["success"] for t in runs[0].targets] == [True] * 4
    assert sum(staggered) < 0.6 * sum(together)  # the first restart settles every digit
    assert runs[1].stopped["not_started"] >= 4
