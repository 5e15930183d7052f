"""FedAvg local steps and attacking a round of the job's own training run (attack.round)."""
import json

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from gradleak.checks import ConfigError
from gradleak.engine.objective import GradientMatch
from gradleak.jobs.config import attacked_batch
from gradleak.victim import training
from gradleak.victim.clients import local_updates, split_among_workers, worker_gradients
from gradleak.victim.data import load_split
from gradleak.victim.defenses import defense_from_config
from gradleak.victim.gradients import shared_gradients
from gradleak.victim.models import build_model
from gradleak.victim.training import TrainingConfigError, check_train_config, fit, load_train_test
from tests.test_config import composed
from tests.test_training import job_cfg

torch.set_num_threads(1)
NOISE = {"name": "noise", "noise": "gaussian", "scale": 1e-2}


@pytest.fixture(scope="module")
def shards():
    """64 real digits (8x8) as 4 clients' batches of 16."""
    split = load_split(OmegaConf.create({"name": "digits"}), "train")
    return split_among_workers(split.images[:64], split.labels[:64], 4)


def lenet(seed=0):
    torch.manual_seed(seed)
    return build_model("lenet", in_channels=1, image_size=8, num_classes=10)


@pytest.mark.fast
def test_one_local_step_is_fedsgd(shards):
    model = lenet()
    fedsgd, _ = worker_gradients(model, *shards, vectorize=False)
    fedavg, _ = local_updates(model, *shards, local_steps=1, local_lr=0.1)
    for g, u in zip(fedsgd, fedavg):
        torch.testing.assert_close(u, g, rtol=1e-4, atol=1e-6)
    three, _ = local_updates(model, *shards, local_steps=3, local_lr=0.1)
    assert sum(((u - g) ** 2).sum() for g, u in zip(fedsgd, three)) > 1e-3 * sum((g ** 2).sum() for g in fedsgd)


@pytest.mark.fast
def test_attackers_update_equals_the_clients(shards):
    """The attack's target (torch.func, vectorized over targets) and the training client's
    loop compute the same FedAvg update."""
    model, (images, labels) = lenet(), shards
    ours = shared_gradients(model, images, labels, local_steps=3, local_lr=0.1)
    clients, _ = local_updates(model, images, labels, local_steps=3, local_lr=0.1)
    for a, c in zip(ours, clients):
        torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-7)


@pytest.mark.fast
def test_unrolled_objective_is_zero_at_the_true_batch(shards):
    model = lenet()
    images, labels = shards[0][:1], shards[1][:1]  # client 0: [1, 16, 1, 8, 8]
    target, _ = local_updates(model, images, labels, local_steps=3, local_lr=0.1)
    soft = F.one_hot(labels, 10).float()
    unrolled = GradientMatch(model, optimize_labels=False, local_steps=3, local_lr=0.1)
    at_truth, d_images, _, _ = unrolled(images, soft, target)
    scale = sum((t ** 2).sum() for t in target)
    assert at_truth.item() < 1e-10 * scale.item()
    assert d_images.abs().max().item() < 1e-6
    moved = images + 0.05 * torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    assert unrolled(moved, soft, target)[0].item() > 1e6 * at_truth.item()
    one_step = GradientMatch(model, optimize_labels=False)  # an attacker who ignores the local steps
    assert one_step(images, soft, target)[0].item() > 1e-2 * scale.item()


def test_round_target_is_the_update_the_training_applied(tmp_path, monkeypatch):
    """Replayed to round 5 with the same seed, the clients' defended updates average to the
    gradient the full run's optimizer applied at step 5, and the run stops after it."""
    applied = []
    mean = training.server_mean
    monkeypatch.setattr(training, "server_mean", lambda defended: applied.append(mean(defended)) or applied[-1])
    cfg = job_cfg(tmp_path, NOISE, local_steps=2)
    train, test = load_train_test(cfg)
    fit(cfg, train, test, defense_from_config(NOISE))
    full = applied.copy()
    applied.clear()
    got = fit(cfg, train, test, defense_from_config(NOISE), intercept=5)["intercepted"]
    assert len(applied) == 6  # steps 0-5, then it stops
    assert len(full) == cfg.train.epochs * (len(train) // 32)
    for u, g in zip(got["updates"], full[5]):
        assert torch.equal(u.mean(0), g)
    assert torch.equal(got["images"], train.images[got["index"]])
    assert torch.equal(got["labels"], train.labels[got["index"]])
    assert got["images"].shape == (4, 8, 1, 8, 8)
    untrained = lenet_like(cfg, train)
    assert any(not torch.equal(p, got["params"][n]) for n, p in untrained.named_parameters())


def lenet_like(cfg, train):
    import pytorch_lightning as pl

    pl.seed_everything(cfg.seed, verbose=False)
    return build_model("lenet", in_channels=1, image_size=8, num_classes=train.num_classes)


@pytest.mark.fast
def test_intercepted_round_is_cached(tmp_path):
    cfg = job_cfg(tmp_path, NOISE)
    first, cached = training.intercept_round(cfg, 3)
    again, cached_again = training.intercept_round(cfg, 3)
    assert (cached, cached_again) == (False, True)
    assert all(torch.equal(a, b) for a, b in zip(first["updates"], again["updates"]))
    with pytest.raises(TrainingConfigError, match=r"^attack.round=1000: the run has \d+ training steps"):
        training.intercept_round(cfg, 1000)


@pytest.mark.fast
def test_rounds_kept_by_the_training_are_the_replayed_rounds(tmp_path, monkeypatch):
    """train.keep_rounds: the run caches those rounds as it trains, equal to a replay, and
    intercept_round then reads them without replaying (fit is not called again)."""
    cfg = job_cfg(tmp_path, NOISE, keep_rounds=[0, 7])
    train, test = load_train_test(cfg)
    replayed = fit(cfg, train, test, defense_from_config(NOISE), intercept=7)["intercepted"]
    result = training.run_training(cfg)
    assert "kept" not in result and result["steps"] > 7
    monkeypatch.setattr(training, "fit", lambda *a, **k: pytest.fail("replayed a kept round"))
    kept, cached = training.intercept_round(cfg, 7)
    assert cached
    assert all(torch.equal(a, b) for a, b in zip(kept["updates"], replayed["updates"]))
    assert all(torch.equal(kept["params"][n], p) for n, p in replayed["params"].items())
    assert torch.equal(kept["index"], replayed["index"])
    assert training.intercept_round(cfg, 0)[1]
    with pytest.raises(TrainingConfigError, match=r"^train.keep_rounds=\[-1\]: must be a list"):
        check_train_config(job_cfg(tmp_path, NOISE, keep_rounds=[-1]))


@pytest.mark.fast
def test_a_rounds_targets_are_its_first_clients_local_batches():
    assert (attacked_batch(composed("attack.num_targets=8")).num_targets, composed().attack.batch_size) == (8, 1)
    for asked, attacked in ((1, 1), (3, 3), (8, 4)):  # train=smoke: 4 workers, 16 images each
        a = attacked_batch(composed("train=smoke", "attack.round=0", f"attack.num_targets={asked}"))
        assert (a.num_targets, a.batch_size) == (attacked, 16)


@pytest.mark.fast
def test_round_needs_training_and_local_steps_exclude_dpsgd():
    with pytest.raises(ConfigError, match="^attack.round=5: attacks a training run's round; set train=smoke"):
        composed("attack.round=5")
    with pytest.raises(ConfigError, match="^attack.batch_size=16: allowed 1 with attack.adaptive=true"):
        composed("train=smoke", "attack.round=0", "attack=adaptive", "defense=dpsgd")
    cfg = composed("train=smoke", "train.local_steps=2")
    cfg.defense = {"name": "dpsgd", "clip": 1.0, "noise_multiplier": 1.0}
    with pytest.raises(TrainingConfigError, match="^train.local_steps=2: defense=dpsgd clips"):
        check_train_config(cfg)


def test_smoke_round_5_with_two_local_steps_records_round_and_accuracy(run_py):
    """The issue's command on the bundled digits, with a short attack."""
    res = run_py("train=smoke", "attack.round=5", "train.local_steps=2", "attack.steps=10",
                 f"train.cache_dir={run_py.dir}/cache")
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((run_py.dir / "run" / "metrics.json").read_text())
    a = m["attack"]
    assert (a["round"], a["local_steps"], a["split"]) == (5, 2, "train")
    assert len(m["targets"]) == 4 and all(len(t["index"]) == 16 for t in m["targets"])
    assert m["config"]["attack.batch_size"] == 16
    assert 0.5 < m["train"]["test_acc"] <= 1.0
    assert "attacked: round 5 of the training" in res.stdout
