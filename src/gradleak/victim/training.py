"""Defended training: what a defense costs in accuracy.

`run_training(cfg, logger)` trains the victim architecture on the dataset's train split
with simulated data-parallel clients whose gradients go through the job's defense
(clients.py), and reports test accuracy next to the undefended baseline of the same
dataset/model/train profile/seed. Every run is cached (cache.py) by what determines it, so
the baseline is trained once per seed, and the jobs of a sweep that attack one defended
training with several attackers train it once.

`intercept_round(cfg, round)` gives what the attacker intercepts at training step `round`:
the server's weights, every client's batch and its defended update (cached as well). The
rounds a profile lists in `train.keep_rounds` are kept by the training run itself; any
other round replays the run up to it.
"""
import time
import warnings
from functools import cache

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, TensorDataset

from gradleak.victim.cache import cached_json, cached_tensors, content_hash
from gradleak.victim.clients import client_updates, server_mean, split_among_workers
from gradleak.victim.data import Split, load_split
from gradleak.victim.defenses import DEFENSES, defense_from_config
from gradleak.victim.models import build_model
from gradleak.victim.privacy import privacy_spent
from gradleak.victim.train_schema import TRAIN_OPTIMIZERS, TrainingConfigError, check_train_config

CACHE_VERSION = 2  # bump when a change to training changes its results
EVAL_BATCH = 1000
METRIC_NAMES = {"test_acc": "train/test_acc", "test_loss": "train/test_loss", "train_loss": "train/loss"}
CURVE_KEYS = tuple(METRIC_NAMES)


class DefendedTraining(pl.LightningModule):
    """Manual optimization: the server's averaged defended gradient is what the optimizer applies."""

    def __init__(self, model, defense, train_cfg, seed: int, metrics_logger=None, keep=(),
                 stop_after: int | None = None):
        super().__init__()
        self.model, self.defense, self.tcfg, self.seed = model, defense, train_cfg, seed
        self.metrics_logger = metrics_logger  # not Lightning's: curves use epochs as steps
        self.automatic_optimization = False
        self.curve = {"epoch": [], **{k: [] for k in CURVE_KEYS}}
        self.keep, self.kept = set(keep), {}  # the steps to intercept, what each shared
        self.stop_after = stop_after

    def configure_optimizers(self):
        opt = TRAIN_OPTIMIZERS[self.tcfg.optimizer](self.model.parameters(), self.tcfg)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=self.tcfg.epochs)}

    def on_fit_start(self):
        choice = self.tcfg.vectorize
        # auto: vmap on accelerators; on CPUs the per-worker loop was measured faster.
        self.vectorize = self.device.type != "cpu" if choice == "auto" else bool(choice)

    def on_train_epoch_start(self):
        self._train_loss, self._train_batches = torch.zeros((), device=self.device), 0

    def on_train_batch_start(self, batch, batch_idx):
        if self.stop_after is not None and self.global_step > self.stop_after:
            return -1  # intercepted: the rest of the run is not needed

    def training_step(self, batch, batch_idx):
        images, labels, index = batch  # index: the images' rows in the train split
        images, labels = split_among_workers(images, labels, self.tcfg.workers)
        defended, losses = client_updates(self.model, images, labels, self.defense, step=self.global_step,
                                          seed=self.seed, vectorize=self.vectorize,
                                          local_steps=self.tcfg.local_steps, local_lr=self.tcfg.local_lr)
        if self.global_step in self.keep:
            params = {n: p.detach().clone(memory_format=torch.contiguous_format)
                      for n, p in self.model.named_parameters()}
            self.kept[self.global_step] = {"params": params, "images": images.clone(), "labels": labels.clone(),
                                           "index": index.reshape(labels.shape).clone(),
                                           "updates": [torch.stack(u) for u in zip(*defended)]}
        grads, loss = server_mean(defended), losses.mean()
        opt = self.optimizers()
        opt.zero_grad()
        for p, g in zip(self.model.parameters(), grads):
            p.grad = g
        opt.step()
        self._train_loss += loss
        self._train_batches += 1

    def on_train_epoch_end(self):
        self.lr_schedulers().step()

    def on_validation_epoch_start(self):
        self._test = torch.zeros(3, device=self.device)  # loss sum, correct, count

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        logits = self.model(images)
        self._test += torch.stack([F.cross_entropy(logits, labels, reduction="sum"),
                                   (logits.argmax(1) == labels).sum().float(),
                                   torch.tensor(float(len(labels)), device=self.device)])

    def on_validation_epoch_end(self):
        # Validation runs after the epoch's last training step, so the epoch is complete.
        loss_sum, correct, count = self._test.tolist()
        values = {"test_acc": correct / count, "test_loss": loss_sum / count,
                  "train_loss": (self._train_loss / max(self._train_batches, 1)).item()}
        epoch = self.current_epoch + 1
        self.curve["epoch"].append(epoch)
        for k, v in values.items():
            self.curve[k].append(v)
        log_epoch(self.metrics_logger, epoch, values)


def log_epoch(logger, epoch: int, values: dict) -> None:
    if logger is not None:
        logger.log_metrics({METRIC_NAMES[k]: v for k, v in values.items()}, step=epoch)


def model_name(cfg) -> str:
    """The trained architecture: train.model when set, else the attacked victim (cfg.model)."""
    return cfg.train.get("model") or cfg.model.name


def training_key(cfg, defense: dict | None = None) -> str:
    """Hash of what determines a training run: data, architecture, profile, seed and the
    defense (`defense`, default undefended). Where files live (data_dir, cache_dir), the
    profile's name, how workers are computed (vectorize) and how privacy is accounted
    (delta, accountant) and which rounds it keeps for attacks (keep_rounds) change no
    result, so they are left out; so is the attack, which training never sees."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    dataset.pop("data_dir", None)
    train = OmegaConf.to_container(cfg.train, resolve=True)
    for key in ("name", "cache_dir", "vectorize", "delta", "accountant", "keep_rounds"):
        train.pop(key, None)
    if train.get("local_steps", 1) == 1:  # FedSGD: no local step is taken
        train.pop("local_lr", None)
    train["model"] = model_name(cfg)
    what = {"version": CACHE_VERSION, "dataset": dataset, "train": train, "seed": cfg.seed}
    if defense is not None and defense.get("name") != "none":
        what["defense"] = defense
    return content_hash(what)


def run_training(cfg, logger=None, test: Split | None = None) -> dict:
    """Train under cfg.defense and compare with the cached undefended baseline.

    Returns {} for train=none. Otherwise test_acc, test_loss, train_loss (last epoch),
    baseline_test_acc, utility_drop = baseline_test_acc - test_acc, wall_s (training time
    of the returned result, when it was computed), epochs, curve (per-epoch lists),
    cached (this run came from the cache) and cached_baseline; train_images and steps;
    under DP-SGD epsilon, delta, sample_rate, noise_multiplier, accountant. Per-epoch metrics go to
    `logger` (a Lightning logger) with the epoch as step, replayed from the cache when
    cached. `test`: the dataset's whole test split when the caller has it loaded already.
    """
    if cfg.train.name == "none":
        return {}
    check_train_config(cfg)
    data = cache(lambda: load_train_test(cfg, test))  # not loaded when everything is cached
    defense = OmegaConf.to_container(cfg.defense, resolve=True)
    undefended = defense["name"] == "none"
    baseline, cached_baseline = cached_json(cfg.train.cache_dir, training_key(cfg), lambda: _fit_keeping_rounds(
        cfg, data(), {"name": "none"}, logger if undefended else None))
    if undefended:
        result, cached = baseline, cached_baseline
    else:
        result, cached = cached_json(cfg.train.cache_dir, training_key(cfg, defense), lambda: _fit_keeping_rounds(
            cfg, data(), defense, logger))
    if cached:
        replay_curve(logger, result["curve"])
    if DEFENSES[defense["name"]].per_sample:  # DP-SGD: its guarantee, accounted now
        result = {**result, **privacy_spent(defense["noise_multiplier"], cfg.train.batch_size / result["train_images"],
                                            result["steps"], cfg.train.delta, cfg.train.accountant)}
    return {**result, "baseline_test_acc": baseline["test_acc"],
            "utility_drop": baseline["test_acc"] - result["test_acc"], "cached": cached,
            "cached_baseline": cached_baseline}


def _fit_keeping_rounds(cfg, splits: tuple[Split, Split], defense: dict, logger) -> dict:
    """fit, with the rounds of train.keep_rounds cached where intercept_round looks first."""
    result = fit(cfg, *splits, defense_from_config(defense), logger, keep=keep_rounds(cfg))
    for step, intercepted in result.pop("kept").items():
        cached_tensors(cfg.train.cache_dir, round_key(cfg, defense, step), lambda kept=intercepted: kept)
    return result


def keep_rounds(cfg) -> list[int]:
    return list(cfg.train.get("keep_rounds") or [])


def round_key(cfg, defense: dict, round: int) -> str:
    return f"{training_key(cfg, defense)}-round{round}"


def replay_curve(logger, curve: dict) -> None:
    for i, epoch in enumerate(curve["epoch"]):
        log_epoch(logger, epoch, {k: curve[k][i] for k in CURVE_KEYS})


def intercept_round(cfg, round: int, splits: tuple[Split, Split] | None = None) -> tuple[dict, bool]:
    """(what the attacker intercepts at training step `round` of cfg's defended run, cached):
    params (the server's weights before the step), images [W, b, C, H, W], labels [W, b]
    and index [W, b] (each client's batch and its rows in load_train_test's train split),
    updates ([W, *p] per parameter: each client's defended update, as the server got it).
    The run is replayed with the same seed and stops after the step; its accuracy is
    run_training's. `splits`: load_train_test(cfg)'s, when the caller holds them."""
    check_train_config(cfg)
    defense = OmegaConf.to_container(cfg.defense, resolve=True)
    key = round_key(cfg, defense, round)

    def replay():
        train, test_split = splits if splits is not None else load_train_test(cfg)
        steps = training_steps(cfg, len(train))
        if round >= steps:
            raise TrainingConfigError(f"attack.round={round}: the run has {steps} training steps "
                                      f"(rounds 0-{steps - 1})")
        return fit(cfg, train, test_split, defense_from_config(defense), intercept=round)["intercepted"]

    return cached_tensors(cfg.train.cache_dir, key, replay)


def training_steps(cfg, n_train: int) -> int:
    """The number of training steps (rounds) of cfg's run on a train split of `n_train`
    images: train.epochs x the whole batches (train.batch_size, the last partial one dropped)
    of the split cut to train.max_train_images, as load_train_test and fit do. Rounds are
    0 .. steps - 1 (attack.round)."""
    t = cfg.train
    images = min(n_train, t.max_train_images) if t.max_train_images else n_train
    return t.epochs * (images // t.batch_size)


def load_train_test(cfg, test: Split | None = None) -> tuple[Split, Split]:
    """The dataset's train and test splits, cut to the profile's sizes by a seeded draw."""
    t = cfg.train
    test = test if test is not None else load_split(cfg.dataset, "test")
    return (_subset(load_split(cfg.dataset, "train"), t.max_train_images, cfg.seed),
            _subset(test, t.max_test_images, cfg.seed))


def _subset(split: Split, limit, seed: int) -> Split:
    if not limit or limit >= len(split):
        return split
    keep = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:limit]
    return Split(split.images[keep], split.labels[keep], split.num_classes)


def fit(cfg, train: Split, test: Split, defense, logger=None, intercept: int | None = None, keep=()) -> dict:
    """One seeded training run under `defense`; the result dict without the baseline keys,
    with what the steps in `keep` shared under "kept" ({step: intercepted}).
    `intercept`: stop after that training step and return only what it shared, as "intercepted"."""
    t = cfg.train
    if len(train) < t.batch_size:
        raise TrainingConfigError(f"train.batch_size={t.batch_size}: the train split has only "
                                  f"{len(train)} images")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    channels, size, _ = train.shape
    model = defense.victim(build_model(model_name(cfg), in_channels=channels, image_size=size,
                                       num_classes=train.num_classes))  # PRECODE: built in
    # Channels-last convolution weights: the many small per-worker backward passes run
    # faster (scripts/bench_training.py); the values computed are the same up to rounding.
    model = model.to(memory_format=torch.channels_last)
    module = DefendedTraining(model, defense, t, cfg.seed, logger,
                              keep=[intercept] if intercept is not None else keep, stop_after=intercept)
    per_epoch = len(train) // t.batch_size
    epochs = t.epochs if intercept is None else intercept // per_epoch + 1
    trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, max_epochs=epochs,
                         logger=False, enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=True, num_sanity_val_steps=0)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")  # in-memory tensors
        trainer.fit(module, *_loaders(train, test, t.batch_size, cfg.seed))
    wall = time.perf_counter() - start
    curve = module.curve
    if intercept is not None:
        return {"intercepted": module.kept[intercept]}
    return {"kept": module.kept, "test_acc": curve["test_acc"][-1], "test_loss": curve["test_loss"][-1],
            "train_loss": curve["train_loss"][-1], "wall_s": wall, "epochs": t.epochs,
            "train_images": len(train), "steps": training_steps(cfg, len(train)), "curve": curve}


def _loaders(train: Split, test: Split, batch_size: int, seed: int):
    # Whole batches are indexed at once: per-image indexing and collation cost more than a step.
    order = RandomSampler(range(len(train)), generator=torch.Generator().manual_seed(seed))
    batches = BatchSampler(order, batch_size, drop_last=True)
    rows = torch.arange(len(train))
    train_loader = DataLoader(TensorDataset(train.images, train.labels, rows), sampler=batches, batch_size=None)
    test_loader = DataLoader(TensorDataset(test.images, test.labels), batch_size=EVAL_BATCH)
    return train_loader, test_loader
