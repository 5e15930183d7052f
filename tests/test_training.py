"""Defended training: worker averaging, per-worker defenses, baseline cache, profiles."""
import copy
import json
import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from pytorch_lightning.loggers.logger import Logger
from torch.func import functional_call, vmap
from torch.utils.data import DataLoader, TensorDataset

from gradleak.victim.clients import client_updates, server_mean, split_among_workers, worker_gradients
from gradleak.victim.data import load_split
from gradleak.victim.defenses import defense_from_config
from gradleak.victim.defenses.precision import lower_precision
from gradleak.victim.defenses.prune import prune
from gradleak.victim.models import build_model
from gradleak.victim.training import (
    DefendedTraining,
    TrainingConfigError,
    check_train_config,
    run_training,
    training_key,
)
from tests.test_config import composed

torch.set_num_threads(1)
NONE = defense_from_config({"name": "none"})


@pytest.fixture(scope="module")
def digits():
    """A real global batch: 64 of scikit-learn's handwritten digits (bundled, 8x8)."""
    split = load_split(OmegaConf.create({"name": "digits"}), "train")
    return split.images[:64], split.labels[:64]


def lenet(seed=0, size=8):
    torch.manual_seed(seed)
    return build_model("lenet", in_channels=1, image_size=size, num_classes=10)


def train_cfg(**over):
    base = dict(name="test", model=None, workers=4, batch_size=64, epochs=2, optimizer="sgd", lr=0.5,
                momentum=0.0, weight_decay=0.0, max_train_images=None, max_test_images=None,
                vectorize="auto", cache_dir="unset", delta=1e-5, accountant="rdp", local_steps=1,
                local_lr=0.1)
    return OmegaConf.create({**base, **over})


def job_cfg(tmp_path, defense, **train):
    return OmegaConf.create({
        "seed": 0, "dataset": {"name": "digits"}, "model": {"name": "lenet"},
        "defense": defense, "trainer": {"accelerator": "cpu"},
        "train": train_cfg(cache_dir=str(tmp_path / "cache"), optimizer="adam", lr=1e-2, epochs=3,
                           batch_size=32, **train)})


def server_gradient(model, images, labels, defense, **how):
    """What the optimizer applies (DefendedTraining.training_step): the mean over workers of
    each worker's defended update, and the mean worker loss."""
    defended, losses = client_updates(model, images, labels, defense, **how)
    return server_mean(defended), losses.mean()


def single_batch_grads(model, images, labels):
    loss = F.cross_entropy(model(images), labels)
    return torch.autograd.grad(loss, list(model.parameters()))


# --- worker averaging ------------------------------------------------------------------------

@pytest.mark.parametrize("vectorize", [True, False])
@pytest.mark.fast
def test_undefended_average_is_the_global_batch_gradient(digits, vectorize):
    model = lenet()
    images, labels = split_among_workers(*digits, 4)
    applied, loss = server_gradient(model, images, labels, NONE, step=0, seed=0, vectorize=vectorize)
    expected = single_batch_grads(model, *digits)
    for a, e in zip(applied, expected):
        torch.testing.assert_close(a, e, atol=1e-6, rtol=0)
    assert loss.item() == pytest.approx(F.cross_entropy(model(digits[0]), digits[1]).item(), abs=1e-6)


@pytest.mark.fast
def test_one_lightning_step_equals_single_batch_sgd(digits):
    """The module's optimizer step with defense=none is ordinary SGD on the global batch."""
    model = lenet()
    reference = copy.deepcopy(model)
    opt = torch.optim.SGD(reference.parameters(), lr=0.5)
    for p, g in zip(reference.parameters(), single_batch_grads(reference, *digits)):
        p.grad = g
    opt.step()

    module = DefendedTraining(model, NONE, train_cfg(), seed=0)
    loader = DataLoader(TensorDataset(*digits, torch.arange(64)), batch_size=64)  # (images, labels, rows)
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, loader)
    moved = max((p - p0).abs().max().item() for p, p0 in zip(model.parameters(), lenet().parameters()))
    assert moved > 1e-3  # the step did something
    for p, r in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, r, atol=1e-6, rtol=0)


@pytest.mark.fast
def test_loop_and_vmap_agree_with_batchnorm():
    """ResNet-20 in train mode: per-worker BatchNorm statistics, both strategies, same result."""
    torch.manual_seed(0)
    images, labels = torch.rand(4, 4, 3, 16, 16), torch.randint(0, 10, (4, 4))
    results = []
    for vectorize in (True, False):
        model = resnet20_seeded()
        grads, _ = worker_gradients(model, images, labels, vectorize)
        results.append((grads, model.bn1.running_mean.clone()))
    (g_vmap, mean_vmap), (g_loop, mean_loop) = results
    for a, b in zip(g_vmap, g_loop):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # Running mean after one update = 0.1 * mean of the workers' batch means (momentum 0.1).
    conv_out = resnet20_seeded().conv1(images.flatten(0, 1))
    torch.testing.assert_close(mean_vmap, 0.1 * conv_out.mean(dim=(0, 2, 3)), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(mean_loop, mean_vmap)
    assert mean_vmap.abs().max() > 1e-3


def resnet20_seeded():
    torch.manual_seed(1)
    return build_model("resnet20", in_channels=3, image_size=16, num_classes=10)


# --- defenses act per worker, before averaging -------------------------------------------------

@pytest.mark.parametrize("noise,workers", [("gaussian", 4), ("gaussian", 16), ("laplacian", 4)])
@pytest.mark.fast
def test_noise_of_the_average_has_std_scale_over_sqrt_workers(digits, noise, workers):
    model, scale = lenet(), 1e-2
    images, labels = split_among_workers(*digits, workers)
    clean, _ = server_gradient(model, images, labels, NONE, step=3, seed=0)
    noisy, _ = server_gradient(model, images, labels, defense_from_config(
        {"name": "noise", "noise": noise, "scale": scale}), step=3, seed=0)
    diff = torch.cat([(n - c).flatten() for n, c in zip(noisy, clean)])
    per_worker_std = scale  # the std of either noise
    assert diff.numel() > 7000
    assert diff.std().item() == pytest.approx(per_worker_std / math.sqrt(workers), rel=0.04)
    assert abs(diff.mean().item()) < 4 * per_worker_std / math.sqrt(workers * diff.numel())


@pytest.mark.fast
def test_noise_is_seeded_per_worker_and_step(digits):
    model = lenet()
    images, labels = split_among_workers(*digits, 4)
    noise = defense_from_config({"name": "noise", "noise": "gaussian", "scale": 1e-2})
    a, _ = server_gradient(model, images, labels, noise, step=5, seed=0)
    b, _ = server_gradient(model, images, labels, noise, step=5, seed=0)
    c, _ = server_gradient(model, images, labels, noise, step=6, seed=0)
    d, _ = server_gradient(model, images, labels, noise, step=5, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert all((x - y).abs().max() > 1e-3 for x, y in zip(a, c))
    assert all((x - y).abs().max() > 1e-3 for x, y in zip(a, d))


def per_worker_then_average(model, images, labels, fn):
    grads, _ = worker_gradients(model, images, labels)
    per_worker = [fn([g[w] for g in grads]) for w in range(images.shape[0])]
    return [torch.stack(gs).mean(0) for gs in zip(*per_worker)], grads


@pytest.mark.fast
def test_prune_applies_to_each_worker_before_averaging(digits):
    model, ratio = lenet(), 0.7
    images, labels = split_among_workers(*digits, 4)
    applied, _ = server_gradient(model, images, labels, defense_from_config(
        {"name": "prune", "ratio": ratio}), step=0, seed=0)
    expected, grads = per_worker_then_average(model, images, labels, lambda g: prune(g, ratio=ratio))
    for a, e in zip(applied, expected):
        torch.testing.assert_close(a, e, atol=0, rtol=0)
    # Pruning the average would zero 70% of the entries; per-worker pruning zeroes only the
    # entries that every worker pruned (59% measured: small entries overlap).
    assert zero_fraction(applied) < ratio - 0.05
    assert zero_fraction(prune([g.mean(0) for g in grads], ratio=ratio)) == pytest.approx(ratio, abs=1e-3)


def zero_fraction(tensors):
    return (torch.cat([t.flatten() for t in tensors]) == 0).float().mean().item()


@pytest.mark.fast
def test_int8_applies_to_each_worker_before_averaging(digits):
    model = lenet()
    images, labels = split_among_workers(*digits, 4)
    applied, _ = server_gradient(model, images, labels, defense_from_config(
        {"name": "precision", "precision": "int8"}), step=0, seed=0)
    expected, grads = per_worker_then_average(
        model, images, labels, lambda g: lower_precision(g, precision="int8"))
    for a, e, g in zip(applied, expected, grads):
        torch.testing.assert_close(a, e, atol=0, rtol=0)
        # Each worker rounds on its own grid (step max|g_w| / 127): the average is off by at
        # most the mean half-step, and is not on the grid of the averaged gradient.
        half_steps = g.flatten(1).abs().amax(1) / 127 / 2
        assert (a - g.mean(0)).abs().max() <= half_steps.mean() * (1 + 1e-5)
    averaged_then_quantized = lower_precision([g.mean(0) for g in grads], precision="int8")
    assert max((a - q).abs().max().item() for a, q in zip(applied, averaged_then_quantized)) > 1e-5


# --- models ------------------------------------------------------------------------------------

@pytest.mark.fast
def test_resnet20_size_and_vmap_in_eval_mode():
    torch.manual_seed(0)
    model = build_model("resnet20", in_channels=3, image_size=32, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == 269_722  # He et al.: 0.27M
    model.train()
    model(torch.rand(8, 3, 32, 32))  # non-trivial running statistics
    model.eval()
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    x = torch.rand(5, 2, 3, 32, 32)
    batched = vmap(lambda xi: functional_call(model, state, (xi,)))(x)
    torch.testing.assert_close(batched, torch.stack([model(xi) for xi in x]), atol=1e-5, rtol=1e-5)


# --- run_training ------------------------------------------------------------------------------

class RecordingLogger(Logger):
    def __init__(self):
        super().__init__()
        self.metrics = []

    name = "recording"
    version = 0

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, dict(metrics)))


def test_run_training_reuses_the_cached_baseline(tmp_path):
    noisy = job_cfg(tmp_path, {"name": "noise", "noise": "gaussian", "scale": 1e-1})
    logger = RecordingLogger()
    first = run_training(noisy, logger)
    assert first["cached_baseline"] is False
    assert first["epochs"] == 3 and first["curve"]["epoch"] == [1, 2, 3]
    assert first["utility_drop"] == pytest.approx(first["baseline_test_acc"] - first["test_acc"])
    assert first["baseline_test_acc"] > 0.75  # 1,437 real digits, 3 epochs: 80% measured
    assert first["utility_drop"] > 0.3  # noise 1e-1 swamps the digits gradient: 21% measured
    assert [s for s, _ in logger.metrics] == [1, 2, 3]  # the defended run's curve, epochs as steps
    assert set(logger.metrics[0][1]) == {"train/test_acc", "train/test_loss", "train/loss"}
    assert logger.metrics[-1][1]["train/test_acc"] == first["test_acc"]
    stored = json.loads((tmp_path / "cache" / f"{training_key(noisy)}.json").read_text())
    assert stored["test_acc"] == first["baseline_test_acc"]

    clean = job_cfg(tmp_path, {"name": "none"})
    assert training_key(clean) == training_key(noisy)
    logger = RecordingLogger()
    second = run_training(clean, logger)
    assert second["cached_baseline"] is True and second["utility_drop"] == 0
    assert second["test_acc"] == first["baseline_test_acc"]
    assert [m["train/test_acc"] for _, m in logger.metrics] == stored["curve"]["test_acc"]

    # Trained afresh by a defense=none job, the baseline is the same: the cache is sound.
    fresh = run_training(job_cfg(tmp_path / "other", {"name": "none"}))
    assert fresh["cached_baseline"] is False
    assert fresh["curve"] == stored["curve"]

    # A second attacker of the same defended training reads it from the cache, curve and all.
    logger = RecordingLogger()
    again = run_training(job_cfg(tmp_path, {"name": "noise", "noise": "gaussian", "scale": 1e-1}), logger)
    assert first["cached"] is False and again["cached"] is True
    assert again["test_acc"] == first["test_acc"] and again["curve"] == first["curve"]
    assert [m["train/test_acc"] for _, m in logger.metrics] == first["curve"]["test_acc"]


@pytest.mark.fast
def test_train_none_skips_everything():
    cfg = OmegaConf.create({"train": {"name": "none"}, "dataset": {"name": "not-loaded"}})
    assert run_training(cfg) == {}


@pytest.mark.fast
def test_training_key_covers_what_determines_the_result(tmp_path):
    cfg = job_cfg(tmp_path, {"name": "none"})
    key = training_key(cfg)
    same = copy.deepcopy(cfg)
    same.train.update(name="renamed", cache_dir="/elsewhere", vectorize=False, delta=1e-6, accountant="prv",
                      local_lr=0.5)  # FedSGD takes no local step: its lr is unused
    OmegaConf.update(same, "attack", {"name": "ig"}, force_add=True)  # training never sees it
    assert training_key(same) == key
    assert training_key(cfg, {"name": "none"}) == key
    for path, value in [("seed", 1), ("train.lr", 1e-3), ("train.workers", 8), ("train.local_steps", 2),
                        ("model.name", "resnet20"), ("dataset.name", "mnist")]:
        other = copy.deepcopy(cfg)
        OmegaConf.update(other, path, value)
        assert training_key(other) != key, path
    noisy = {"name": "noise", "noise": "gaussian", "scale": 1e-1}
    assert training_key(cfg, noisy) != key
    assert training_key(cfg, noisy) != training_key(cfg, {**noisy, "scale": 1e-2})
    fedavg = copy.deepcopy(cfg)
    fedavg.train.local_steps = 2
    faster = copy.deepcopy(fedavg)
    faster.train.local_lr = 0.5
    assert training_key(faster) != training_key(fedavg)


@pytest.mark.parametrize("key,value,message", [
    ("batch_size", 30, "train.batch_size=30: must be a multiple of train.workers=4 "
                       "(each worker gets an equal shard)"),
    ("optimizer", "lbfgs", "train.optimizer=lbfgs: allowed: sgd, adam"),
    ("workers", 0, "train.workers=0: must be a positive integer"),
    ("vectorize", "yes", "train.vectorize=yes: allowed: auto, true, false"),
    ("accountant", "gdp", "train.accountant=gdp: allowed: rdp, prv"),
    ("delta", 1.0, "train.delta=1.0: must be in (0, 1)"),
    ("local_steps", 0, "train.local_steps=0: must be a positive integer"),
])
@pytest.mark.fast
def test_bad_train_profiles_fail_with_one_line(tmp_path, key, value, message):
    cfg = job_cfg(tmp_path, {"name": "none"})
    cfg.train[key] = value
    with pytest.raises(TrainingConfigError) as info:
        check_train_config(cfg)
    assert str(info.value) == message


# --- the smoke profile on real MNIST (slow: about 4 minutes on one thread) ---------------------

@pytest.mark.slow
def test_smoke_profile_on_mnist(shared_data, tmp_path):
    from hydra import compose, initialize_config_dir

    conf = Path(__file__).resolve().parents[1] / "conf"
    results = {}
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        for job in (["defense=none"], ["defense=noise", "scale=1e-1"], ["defense=prune", "ratio=0.7"],
                    ["defense=precision", "precision=int8"]):
            cfg = compose("config", overrides=["dataset=mnist", "train=smoke", f"data_dir={shared_data}",
                                               "trainer.accelerator=cpu",
                                               f"train.cache_dir={tmp_path}", *job])
            results[" ".join(job)] = run_training(cfg)
    for job, r in results.items():
        print(f"{job}: test_acc {r['test_acc']:.4f} utility_drop {r['utility_drop']:+.4f} "
              f"wall {r['wall_s']:.1f}s cached_baseline {r['cached_baseline']}")
    assert results["defense=none"]["test_acc"] >= 0.95
    assert results["defense=noise scale=1e-1"]["utility_drop"] > 0.01
    assert abs(results["defense=precision precision=int8"]["utility_drop"]) < 0.01


@pytest.mark.parametrize("overrides,message", [
    (["model=resnet20", "defense=dpsgd"], "defense=dpsgd: clips per-sample gradients, which resnet20's BatchNorm "
                                          "does not have (use model=lenet)"),
    (["train.model=resnet20", "defense=dpsgd"], "defense=dpsgd: clips per-sample gradients, which resnet20's "
                                                "BatchNorm does not have (use model=lenet)"),
    (["model=resnet20", "attack.round=0"], "attack.round=0: the clients' BatchNorm statistics are not part of "
                                           "the intercepted update (use model=lenet)"),
    (["train.model=vgg"], "train.model=vgg: allowed: lenet, resnet20"),
])
@pytest.mark.fast
def test_rules_between_training_and_model_fail_when_composed(overrides, message):
    """Checked with the config (preflight), not after a training run or a replay."""
    with pytest.raises(TrainingConfigError) as info:
        composed("train=smoke", *overrides)
    assert str(info.value) == message
