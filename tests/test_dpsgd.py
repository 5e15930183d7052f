"""DP-SGD: per-sample clipping, the noise, the same code in the attack and in training, the
adaptive attacker's view of it, and epsilon from Opacus (real digits throughout)."""
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from gradleak.checks import ConfigError
from gradleak.engine.attack import Attack, adaptive_form
from gradleak.engine.problems import DummyLayout, ProblemObjective
from gradleak.victim.clients import split_among_workers, worker_seed
from gradleak.victim.data import load_split
from gradleak.victim.defenses import defense_from_config
from gradleak.victim.defenses.dpsgd import clip_per_sample, dpsgd
from gradleak.victim.gradients import per_sample_gradients, shared_gradients
from gradleak.victim.models import LeNet
from gradleak.victim.training import run_training
from tests.test_training import server_gradient

pytestmark = pytest.mark.fast

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def digits():
    return load_split(OmegaConf.create({"name": "digits"}), "train")


def lenet(seed=0):
    torch.manual_seed(seed)
    return LeNet(1, 8, 10).eval()


def per_sample_by_autograd(model, images, labels):
    """One backward pass per image: the plain definition, [n, *param] per parameter."""
    out = []
    for x, y in zip(images, labels):
        loss = F.cross_entropy(model(x[None]), y[None])
        out.append(torch.autograd.grad(loss, list(model.parameters())))
    return [torch.stack(g) for g in zip(*out)]


def norms(grads, sample_dims=1):
    return sum(g.flatten(sample_dims).pow(2).sum(-1) for g in grads).sqrt()


def test_clipped_per_sample_gradients_have_norm_at_most_clip(digits):
    model = lenet().requires_grad_(True)
    grads = per_sample_by_autograd(model, digits.images[:32], digits.labels[:32])
    raw = norms(grads)
    clip = float(raw.median())  # half the samples above it, half below
    clipped = norms(clip_per_sample(grads, clip, sample_dim=0))
    assert float(clipped.max()) <= clip * (1 + 1e-5)
    below = raw < clip
    assert 0 < int(below.sum()) < 32
    torch.testing.assert_close(clipped[below], raw[below])  # small gradients are left alone
    torch.testing.assert_close(clipped[~below], torch.full_like(raw[~below], clip), rtol=1e-5, atol=0)


def test_noise_has_std_noise_multiplier_times_clip_over_n():
    n, clip, z = 4, 0.5, 2.0
    zeros = [torch.zeros(n, 20000)]
    out = dpsgd(zeros, clip=clip, noise_multiplier=z, generator=torch.Generator().manual_seed(0))[0]
    assert float(out.std()) == pytest.approx(z * clip / n, rel=0.02)
    again = dpsgd(zeros, clip=clip, noise_multiplier=z, generator=torch.Generator().manual_seed(0))[0]
    assert torch.equal(out, again)


def test_the_attacked_gradient_is_the_clipped_mean_of_per_sample_gradients(digits):
    """The attack's per-sample path: [T, B] images, each target's B gradients clipped and averaged."""
    model = lenet()
    images = digits.images[:6].reshape(3, 2, 1, 8, 8)
    labels = digits.labels[:6].reshape(3, 2)
    per_sample, _ = per_sample_gradients(model, images, labels)
    batch = shared_gradients(model, images, labels)
    for p, b in zip(per_sample, batch):
        torch.testing.assert_close(p.mean(1), b)  # the mean of per-sample gradients is the batch's
    clip = 0.5 * float(norms(per_sample, 2).min())  # every sample is clipped
    attacked = defense_from_config({"name": "dpsgd", "clip": clip, "noise_multiplier": 0.0})(per_sample, batch_dims=1)
    model.requires_grad_(True)
    for t in range(3):
        plain = per_sample_by_autograd(model, images[t], labels[t])
        scale = clip / norms(plain)
        expected = [(g * scale.reshape(-1, *[1] * (g.dim() - 1))).mean(0) for g in plain]
        for a, e in zip(attacked, expected):
            torch.testing.assert_close(a[t], e, rtol=1e-4, atol=1e-7)


def test_training_applies_the_mean_over_workers_of_each_workers_dpsgd_gradient(digits):
    model = lenet()
    images, labels = split_among_workers(digits.images[:64], digits.labels[:64], 4)
    clip, z = 0.05, 1.0
    defense = defense_from_config({"name": "dpsgd", "clip": clip, "noise_multiplier": z})
    applied, _ = server_gradient(model, images, labels, defense, step=3, seed=7, vectorize=False)
    model.requires_grad_(True)
    expected = []
    for w in range(4):
        plain = per_sample_by_autograd(model, images[w], labels[w])
        gen = torch.Generator().manual_seed(worker_seed(7, 3, w))
        expected.append(dpsgd(plain, clip=clip, noise_multiplier=z, generator=gen))
    for a, *per_worker in zip(applied, *expected):
        torch.testing.assert_close(a, torch.stack(per_worker).mean(0), rtol=1e-4, atol=1e-7)
    assert float(norms([g[None] for g in applied])) > 0  # the noise is there, not only the clip


def test_adaptive_match_is_zero_at_the_true_image_and_plain_dlg_sees_a_gap(digits):
    model = lenet().double().requires_grad_(False)
    images = digits.images[:4, None].double()  # [T=4, B=1, 1, 8, 8]
    labels = digits.labels[:4, None]
    per_sample, _ = per_sample_gradients(model, images, labels)
    clip = 0.5 * float(norms(per_sample, 2).min())
    cfg = {"name": "dpsgd", "clip": clip, "noise_multiplier": 0.0}
    defended = defense_from_config(cfg)(per_sample, batch_dims=1)
    layout = DummyLayout(1, (1, 8, 8), 10, with_labels=False)
    onehot = F.one_hot(labels, 10).double()
    form = adaptive_form(OmegaConf.create({"adaptive": True, "batch_size": 1}), defense_from_config(cfg))
    rows = torch.arange(4)
    aware, _ = ProblemObjective(model, layout, defended, onehot, transform=form.transform)(images.flatten(1), rows)
    plain, _ = ProblemObjective(model, layout, defended, onehot)(images.flatten(1), rows)
    assert float(aware.abs().max()) < 1e-24
    assert float(plain.min()) > 1e-6  # clipping shrank the gradient: the plain match is off


def test_adaptive_dpsgd_needs_one_image_per_gradient():
    with pytest.raises(ConfigError, match="attack.batch_size=2: allowed 1 with attack.adaptive=true"):
        adaptive_form(OmegaConf.create({"adaptive": True, "batch_size": 2}),
                      defense_from_config({"name": "dpsgd", "clip": 1.0, "noise_multiplier": 1.0}))


def test_attack_targets_are_dpsgd_defended(digits):
    """Attack's set-up: its target gradient is the clipped one (z = 0), not the raw one."""
    model = lenet()
    images, labels = digits.images[:2].reshape(2, 1, 1, 8, 8), digits.labels[:2].reshape(2, 1)
    raw = shared_gradients(model, images, labels)
    clip = 0.5 * float(norms(raw, 1).min())
    cfg = OmegaConf.load("conf/attack/dlg.yaml")
    cfg.num_targets, cfg.steps = 2, 0
    attack = Attack(cfg, model, images, labels,
                    defense_from_config({"name": "dpsgd", "clip": clip, "noise_multiplier": 0.0}), 0,
                    torch.device("cpu"))
    torch.testing.assert_close(norms(attack.targets, 1), torch.full((2,), clip), rtol=1e-5, atol=0)


def test_training_reports_opacus_epsilon_for_its_sample_rate_and_steps(tmp_path):
    from opacus.accountants import RDPAccountant

    cfg = OmegaConf.create({
        "seed": 0, "dataset": {"name": "digits"}, "model": {"name": "lenet"}, "trainer": {"accelerator": "cpu"},
        "defense": {"name": "dpsgd", "clip": 1.0, "noise_multiplier": 1.0},
        "train": dict(name="test", model=None, workers=4, batch_size=32, epochs=2, optimizer="adam", lr=1e-2,
                      momentum=0.0, weight_decay=0.0, max_train_images=None, max_test_images=None,
                      vectorize="auto", cache_dir=str(tmp_path), delta=1e-5, accountant="rdp",
                      local_steps=1, local_lr=0.1)})
    result = run_training(cfg)
    n = result["train_images"]
    assert n == 1437  # the digits' train split (80% of 1,797)
    assert result["steps"] == 2 * (n // 32) and result["sample_rate"] == 32 / n
    acc = RDPAccountant()
    for _ in range(result["steps"]):
        acc.step(noise_multiplier=1.0, sample_rate=32 / n)
    assert result["epsilon"] == pytest.approx(acc.get_epsilon(1e-5), rel=0.02)
    assert result["delta"] == 1e-5 and result["noise_multiplier"] == 1.0
    assert 1 < result["epsilon"] < 20
    cfg.defense.noise_multiplier = 2.0
    assert run_training(cfg)["epsilon"] < result["epsilon"]  # more noise, a stronger guarantee
