"""Inverting Gradients and the adaptive attacks: the objective against plain autograd, the
defense-aware matches at the true image, the batched signed Adam against its one-image loop
and against each problem run alone (real digits, float64 unless said)."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from gradleak.checks import ConfigError
from gradleak.engine.attack import adaptive_form, run_attack
from gradleak.engine.objective import GradientMatch
from gradleak.engine.optimizers import DIVERGED, RUNNING, BatchedSignedAdam, ig_milestones
from gradleak.engine.problems import DummyLayout, ProblemObjective
from gradleak.engine.published import ReferenceIG, reference_ig_cost
from gradleak.victim.data import load_split
from gradleak.victim.defenses import defense_from_config
from gradleak.victim.gradients import shared_gradients
from gradleak.victim.models import LeNet

CONF = Path(__file__).resolve().parents[1] / "conf"
K = 4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Small tensors: one thread is fastest and leaves a shared machine's other cores alone."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return load_split(OmegaConf.create({"name": "digits"}), "test")


@pytest.fixture(scope="module")
def problem(digits):
    """K real digits behind K undefended gradients of the DLG LeNet (float64), one-hot labels
    and a random start in [0, 1]."""
    torch.manual_seed(0)
    model = LeNet(1, 8, 10).double().eval().requires_grad_(False)
    images = digits.images[:K, None].double()
    labels = digits.labels[:K, None]
    targets = shared_gradients(model, images, labels)
    onehot = F.one_hot(labels, 10).double()  # [K, 1, 10]
    x0 = torch.rand(K, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return model, images, onehot, targets, x0


LAYOUT = DummyLayout(1, (1, 8, 8), 10, with_labels=False)


@pytest.mark.fast
def test_ig_objective_equals_plain_autograd(problem):
    model, _, onehot, targets, x0 = problem
    tv = 0.05  # large enough that a wrong TV shows in the value and its gradient
    match = GradientMatch(model, optimize_labels=False, match="cosine", tv=tv)
    value, d_images, _, _ = match(LAYOUT.images(x0), onehot, targets)
    for k in range(K):
        images = LAYOUT.images(x0[k:k + 1])[0].clone().requires_grad_(True)
        plain = reference_ig_cost(model.requires_grad_(True), images, onehot[k], [t[k] for t in targets], tv)
        model.requires_grad_(False)
        (d_plain,) = torch.autograd.grad(plain, images)
        torch.testing.assert_close(value[k], plain.detach(), rtol=1e-12, atol=0)
        torch.testing.assert_close(d_images[k], d_plain, rtol=1e-10, atol=1e-14)
    assert float(value.min()) > 0.01  # far from the truth: a real value, not zero


@pytest.mark.parametrize("defense_cfg", [{"name": "prune", "ratio": 0.7},
                                         {"name": "precision", "precision": "int8"}])
@pytest.mark.parametrize("match", ["l2", "cosine"])
@pytest.mark.fast
def test_defense_aware_match_is_zero_at_the_true_image(problem, defense_cfg, match):
    model, images, onehot, clean, x0 = problem
    defended = defense_from_config(defense_cfg)(clean, batch_dims=1)
    truth, rows = images.flatten(1), torch.arange(K)
    form = adaptive_form(OmegaConf.create({"adaptive": True}), defense_from_config(defense_cfg))
    aware = ProblemObjective(model, LAYOUT, defended, onehot, match=match, transform=form.transform)
    plain = ProblemObjective(model, LAYOUT, defended, onehot, match=match)
    at_truth, _ = aware(truth, rows)
    zero = 1e-24 if match == "l2" else 1e-14  # cosine: 1 - cos(g, g) is round-off, not 0
    assert float(at_truth.abs().max()) < zero
    plain_at_truth, _ = plain(truth, rows)
    assert float(plain_at_truth.min()) > 1e3 * zero  # the defense moved the gradient: plain DLG sees a gap
    elsewhere, _ = aware(x0, rows)
    assert float(elsewhere.min()) > 1e-6


@pytest.mark.fast
def test_laplacian_noise_is_attacked_with_l1_and_gaussian_with_l2():
    cfg = OmegaConf.create({"adaptive": True})
    lap = adaptive_form(cfg, defense_from_config({"name": "noise", "noise": "laplacian", "scale": 0.1}))
    gau = adaptive_form(cfg, defense_from_config({"name": "noise", "noise": "gaussian", "scale": 0.1}))
    assert (lap.match, lap.transform, gau.match, gau.transform) == ("l1", None, "l2", None)
    off = adaptive_form(OmegaConf.create({"adaptive": False}),
                        defense_from_config({"name": "noise", "noise": "laplacian", "scale": 0.1}))
    assert off.match is None and off.transform is None


@pytest.mark.fast
def test_l1_match_equals_plain_sum_of_absolute_differences(problem):
    model, _, onehot, targets, x0 = problem
    value, _, _, _ = GradientMatch(model, optimize_labels=False, match="l1")(LAYOUT.images(x0), onehot, targets)
    for k in range(K):
        images = LAYOUT.images(x0[k:k + 1])[0].clone().requires_grad_(True)
        with torch.enable_grad():
            loss = -(onehot[k] * F.log_softmax(model.requires_grad_(True)(images), -1)).sum(-1).mean()
            grads = torch.autograd.grad(loss, list(model.parameters()))
        model.requires_grad_(False)
        plain = sum((g - t[k]).abs().sum() for g, t in zip(grads, targets))
        torch.testing.assert_close(value[k], plain, rtol=1e-12, atol=0)


@pytest.mark.fast
def test_defense_without_adaptive_form_is_refused():
    defense = defense_from_config({"name": "none"})
    defense.adaptive = None  # what a defense that declares no adaptive form gives
    with pytest.raises(ConfigError, match="defense=none has no adaptive form"):
        adaptive_form(OmegaConf.create({"adaptive": True}), defense)


def ig_optimizer(problem, rows, iterations, max_iter, tv=1e-2, targets=None):
    model, _, onehot, clean, x0 = problem
    targets = clean if targets is None else targets
    objective = ProblemObjective(model, LAYOUT, [t[rows] for t in targets], onehot[rows], match="cosine", tv=tv)
    return BatchedSignedAdam(objective, x0[rows].clone(), lr=0.1, max_iter=max_iter,
                             total_iterations=iterations, box=LAYOUT.image_numel)


@pytest.mark.fast
def test_signed_adam_equals_the_published_loop(problem):
    """torch.optim.Adam on sign(grad), MultiStepLR, clamp: the same trajectory, update by update."""
    model, _, onehot, targets, x0 = problem
    iterations, k_ref = 40, 2  # milestones 14, 24, 35: every decay happens inside the run
    assert ig_milestones(iterations) == [14.0, 24.0, 35.0]
    ours = ig_optimizer(problem, torch.arange(k_ref), iterations, max_iter=1)
    refs = [ReferenceIG(model, [t[k] for t in targets], LAYOUT.images(x0[k:k + 1])[0], onehot[k], iterations,
                        lr=0.1, tv=1e-2) for k in range(k_ref)]
    for it in range(iterations):
        ours_loss = ours.step()
        ref_loss = torch.tensor([r.step() for r in refs], dtype=torch.float64)
        torch.testing.assert_close(ours_loss, ref_loss, rtol=1e-9, atol=1e-12)
        ref_x = torch.stack([r.images.detach().flatten() for r in refs])
        torch.testing.assert_close(ours.state.x, ref_x, rtol=0, atol=1e-9, msg=f"update {it + 1}")
    assert abs(refs[0].opt.param_groups[0]["lr"] - 1e-4) < 1e-12  # three decays happened
    assert float(ours.step_sizes(torch.arange(k_ref)).max()) == pytest.approx(1e-4)
    assert ((ours.state.x >= 0) & (ours.state.x <= 1)).all()
    assert float((ours.state.x - x0[:k_ref]).abs().max()) > 0.1  # it moved


@pytest.mark.fast
def test_each_problem_of_a_batch_equals_its_run_alone(problem):
    _, _, _, clean, _ = problem
    poisoned = [t.clone() for t in clean]
    poisoned[1][2] = float("nan")  # problem 2's target: it must diverge alone, not take others along
    batched = ig_optimizer(problem, torch.arange(K), 30, max_iter=5, targets=poisoned)
    for _ in range(6):
        batched.step()
    st = batched.state
    assert st.status[2] == DIVERGED and torch.isfinite(st.x[2]).all()
    assert (st.status[[0, 1, 3]] == RUNNING).all()
    for k in (0, 1, 3):
        alone = ig_optimizer(problem, torch.tensor([k]), 30, max_iter=5)
        for _ in range(6):
            alone.step()
        torch.testing.assert_close(st.x[k], alone.state.x[0], rtol=0, atol=1e-12)
        torch.testing.assert_close(st.loss[k], alone.state.loss[0], rtol=1e-12, atol=0)
        assert int(st.evals[k]) == int(alone.state.evals[0]) == 30


def ig_cfg(**overrides):
    """attack=ig as a run composes it (ig.yaml inherits dlg.yaml's keys)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        attack = compose("config", overrides=["attack=ig"]).attack
    return OmegaConf.merge(attack, overrides)


def test_ig_attack_rebuilds_digits(digits):
    """Shortened run (2,400 updates): all 4 digits below MSE 1e-3, labels by iDLG's rule."""
    images, labels = digits.images[:4].reshape(4, 1, 1, 8, 8), digits.labels[:4].reshape(4, 1)
    torch.manual_seed(0)
    out = run_attack(ig_cfg(num_targets=4, steps=120), LeNet(1, 8, 10), images, labels,
                     defense_from_config({"name": "none"}), seed=0, accelerator="cpu", progress_bar=False)
    assert all(t["label_acc"] == 1.0 for t in out.targets)
    assert sum(t["success"] for t in out.targets) == 4
    assert all(t["evals"] == 2400 for t in out.targets)
    assert ((out.reconstructions >= 0) & (out.reconstructions <= 1)).all()


@pytest.mark.fast
def test_int8_dead_zone_forgives_half_a_step_and_no_more():
    from gradleak.victim.defenses.precision import int8_dead_zone

    defended = torch.tensor([1.27, -0.5, 0.0, 0.3], dtype=torch.float64)  # step 0.01: half 0.005
    dummy = defended + torch.tensor([0.0049, -0.0049, 0.007, -0.012], dtype=torch.float64)
    seen = int8_dead_zone([dummy], [defended])[0]
    torch.testing.assert_close(seen - defended, torch.tensor([0.0, 0.0, 0.002, -0.007], dtype=torch.float64))
