"""The train group's types and ranges (the values live in conf/train/*.yaml), and the rules
that tie a training profile to the rest of the job. Lightning-free: preflight checks every
job of a sweep in the launching process."""
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import MISSING

from gradleak.checks import ConfigError, check_schema
from gradleak.victim.defenses import DEFENSES
from gradleak.victim.models import MODELS, uses_batchnorm
from gradleak.victim.privacy import ACCOUNTANTS

TRAIN_OPTIMIZERS = {
    "sgd": lambda params, t: torch.optim.SGD(params, lr=t.lr, momentum=t.momentum,
                                             weight_decay=t.weight_decay),
    "adam": lambda params, t: torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay),
}


class TrainingConfigError(ConfigError):
    """A train profile that cannot run; the message is one line meant for the user."""


@dataclass
class TrainSchema:
    name: str = MISSING
    model: str | None = MISSING          # the trained architecture; None: the attacked victim's
    workers: Any = MISSING               # positive integers: checked below, with the rule's words
    batch_size: Any = MISSING
    epochs: Any = MISSING
    optimizer: str = MISSING
    lr: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    local_steps: Any = MISSING
    local_lr: float = MISSING
    max_train_images: int | None = MISSING
    max_test_images: int | None = MISSING
    vectorize: Any = MISSING             # auto | true | false
    cache_dir: str = MISSING
    delta: float = MISSING
    accountant: str = MISSING
    keep_rounds: list[Any] = field(default_factory=list)

    def __post_init__(self):
        if self.optimizer not in TRAIN_OPTIMIZERS:
            _fail(f"train.optimizer={self.optimizer}: allowed: {', '.join(TRAIN_OPTIMIZERS)}")
        for key in ("workers", "batch_size", "epochs"):
            _positive_int(key, getattr(self, key))
        if self.batch_size % self.workers:
            _fail(f"train.batch_size={self.batch_size}: must be a multiple of train.workers={self.workers} "
                  "(each worker gets an equal shard)")
        if self.vectorize not in ("auto", True, False):
            _fail(f"train.vectorize={self.vectorize}: allowed: auto, true, false")
        if self.accountant not in ACCOUNTANTS:
            _fail(f"train.accountant={self.accountant}: allowed: {', '.join(ACCOUNTANTS)}")
        if not 0 < self.delta < 1:
            _fail(f"train.delta={self.delta}: must be in (0, 1)")
        if not all(isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in self.keep_rounds):
            _fail(f"train.keep_rounds={list(self.keep_rounds)}: must be a list of training steps (integers >= 0)")
        _positive_int("local_steps", self.local_steps)
        if self.local_steps > 1 and not self.local_lr > 0:
            _fail(f"train.local_lr={self.local_lr}: must be > 0 with train.local_steps > 1")


def _fail(message: str):
    raise TrainingConfigError(message)


def _positive_int(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        _fail(f"train.{key}={value}: must be a positive integer")


def check_train_config(cfg) -> None:
    """The train profile, and what it must agree with: the defense (DP-SGD clips the
    per-sample gradients of one step) and the model (BatchNorm has no per-sample gradients
    and is not part of an intercepted update). One line naming the key on the first problem."""
    check_schema(TrainSchema, cfg.train, "train.")
    t, defense = cfg.train, DEFENSES[cfg.defense.name]
    if t.local_steps > 1 and defense.per_sample:
        _fail(f"train.local_steps={t.local_steps}: defense={cfg.defense.name} clips the "
              "per-sample gradients of one step; use train.local_steps=1")
    if t.local_steps > 1 and defense.extend_model is not None:
        _fail(f"train.local_steps={t.local_steps}: defense={cfg.defense.name} draws the client's noise once "
              "per step; use train.local_steps=1")
    trained = t.get("model") or cfg.model.name
    if trained not in MODELS:
        _fail(f"train.model={trained}: allowed: {', '.join(MODELS)}")
    if uses_batchnorm(trained) and defense.per_sample:
        _fail(f"defense={cfg.defense.name}: clips per-sample gradients, which {trained}'s BatchNorm "
              "does not have (use model=lenet)")
    if uses_batchnorm(trained) and cfg.attack.round is not None:
        _fail(f"attack.round={cfg.attack.round}: the clients' BatchNorm statistics are not part of "
              "the intercepted update (use model=lenet)")
