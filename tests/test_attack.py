"""The attack as users run it: targets, restarts, labels, batches, divergence (real digits)."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from gradleak.engine.attack import Attack, run_attack
from gradleak.engine.labels import idlg_labels
from gradleak.engine.problems import DummyLayout, ProblemObjective
from gradleak.victim.data import load_split
from gradleak.victim.defenses import defense_from_config
from gradleak.victim.gradients import shared_gradients
from gradleak.victim.models import LeNet

ATTACK = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "attack" / "dlg.yaml")
NO_DEFENSE = defense_from_config({"name": "none"})


@pytest.fixture(scope="module")
def digits():
    return load_split(OmegaConf.create({"name": "digits"}), "test")


def attack_cfg(**overrides):
    """The default attack; one start per target unless a test is about restarts (speed)."""
    return OmegaConf.merge(ATTACK, {"restarts": 1, **overrides})


def victim(seed=0):
    torch.manual_seed(seed)
    return LeNet(1, 8, 10)


def targets_of(split, t, b):
    return split.images[:t * b].reshape(t, b, 1, 8, 8), split.labels[:t * b].reshape(t, b)


@pytest.mark.fast
def test_idlg_rule_recovers_every_label(digits):
    images, labels = targets_of(digits, 64, 1)
    model = victim()
    grads = shared_gradients(model, images, labels)
    assert torch.equal(idlg_labels(model, grads), labels[:, 0])


@pytest.mark.fast
def test_idlg_attack_labels_and_reconstructions(digits):
    images, labels = targets_of(digits, 8, 1)
    out = run_attack(attack_cfg(labels="idlg", steps=60), victim(), images, labels, NO_DEFENSE, seed=0,
                     accelerator="cpu", progress_bar=False)
    assert all(t["label_acc"] == 1.0 for t in out.targets)
    assert sum(t["success"] for t in out.targets) >= 7


@pytest.mark.fast
def test_restarts_keep_lowest_gradient_match_loss(digits):
    images, labels = targets_of(digits, 4, 1)
    cfg = attack_cfg(restarts=3, steps=3, stop={"restart_delay": 0})  # every restart runs
    attack = Attack(cfg, victim(), images, labels, NO_DEFENSE, seed=0, device=torch.device("cpu"))
    for _ in range(3):
        attack.optimizer.step()
    loss = attack.optimizer.state.loss.view(4, 3)
    best = attack.best_problems()
    assert torch.equal(best, loss.argmin(dim=1) + torch.arange(0, 12, 3))
    results = attack.results()
    assert [r["loss"] for r in results] == pytest.approx(loss.min(dim=1).values.tolist())


@pytest.mark.fast
def test_batch_of_images_is_matched_before_metrics(digits):
    images, labels = targets_of(digits, 2, 4)
    attack = Attack(attack_cfg(batch_size=4, steps=0), victim(), images, labels, NO_DEFENSE, seed=0,
                    device=torch.device("cpu"))
    shuffled = images[:, [2, 0, 3, 1]]  # the truth in another order: a perfect reconstruction
    attack.optimizer.state.x[:, : attack.layout.image_numel] = shuffled.flatten(1)
    results = attack.results()
    assert all(r["mse"] == 0.0 and r["success"] for r in results)


@pytest.mark.fast
def test_diverged_target_is_a_failure_not_a_crash(digits):
    images, labels = targets_of(digits, 3, 1)
    attack = Attack(attack_cfg(steps=2), victim(), images, labels, NO_DEFENSE, seed=0,
                    device=torch.device("cpu"))
    attack.targets[0][1] = float("nan")  # target 1's gradient is poisoned
    attack.optimizer = attack._optimizer(seed=0)
    attack.optimizer.step()
    results = attack.results()
    assert results[1]["diverged"] and not results[1]["success"]
    assert not results[0]["diverged"] and not results[2]["diverged"]


def test_stronger_defense_hurts_reconstruction(digits):
    images, labels = targets_of(digits, 4, 1)
    mse = {}
    for scale in (1e-4, 1e-1):
        noise = defense_from_config({"name": "noise", "noise": "gaussian", "scale": scale})
        out = run_attack(attack_cfg(steps=40), victim(), images, labels, noise, seed=0,
                         accelerator="cpu", progress_bar=False)
        mse[scale] = sorted(t["mse"] for t in out.targets)[1]
    assert mse[1e-4] < 1e-3 < mse[1e-1]


def test_compiled_objective_matches_eager_also_for_padded_and_small_subsets(digits):
    images, labels = targets_of(digits, 8, 1)
    model = victim().eval().requires_grad_(False)
    targets = shared_gradients(model, images, labels)
    layout = DummyLayout(1, (1, 8, 8), 10, with_labels=True)
    x = torch.randn(8, layout.image_numel + 10, generator=torch.Generator().manual_seed(0))
    eager = ProblemObjective(model, layout, targets, None)
    for chunk in (0, 4):  # one chunk (missing rows zero-filled); chunks of 4 (last one padded)
        compiled = ProblemObjective(model, layout, targets, None, chunk_size=chunk, compile=True)
        for rows in (torch.arange(8), torch.tensor([0, 1, 2, 4, 6, 7]), torch.tensor([5])):
            (v_eager, g_eager), (v_comp, g_comp) = eager(x[rows], rows), compiled(x[rows], rows)
            assert v_comp.shape == (len(rows),) and g_comp.shape == (len(rows), x.shape[1])
            torch.testing.assert_close(v_comp, v_eager, rtol=1e-4, atol=0)
            torch.testing.assert_close(g_comp, g_eager, rtol=1e-4, atol=1e-4 * float(g_eager.abs().max()))
    assert [compiled.runs_compiled(k) for k in (4, 3, 2, 1)] == [True, True, False, False]
