"""The job's config schema: each group's options, value types and ranges, checked with OmegaConf.

Values (defaults) live in the YAML files under conf/ only; the schemas here and beside
each defense (victim/defenses), the attack (engine/schema.py) and its stop rules
(engine/stopping.py) hold types and ranges.
`validate(cfg)` raises ConfigError with one line naming the key as the user spells it,
the value and what is allowed. Types are checked by OmegaConf's structured configs;
ranges and choices by each schema's __post_init__.
"""
from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from gradleak.checks import ConfigError, check_schema, choice, in_range
from gradleak.engine.schema import AttackSchema, check_adaptive
from gradleak.text.schema import TEXT_DATASETS, TEXT_MODELS, is_text_profile
from gradleak.victim.defenses import DEFENSES, knobs_of
from gradleak.victim.defenses import KNOBS as DEFENSE_KNOBS
from gradleak.victim.models import uses_batchnorm
from gradleak.victim.train_schema import check_train_config

# Knobs that live at the top level of the command line (defense=noise scale=1e-3, path=...).
KNOBS = (*DEFENSE_KNOBS, "path")


@dataclass
class DatasetSchema:
    """Datasets differ in which of these they have: an absent key is None, not a value."""
    name: str = MISSING
    data_dir: str | None = None
    path: str | None = None
    size: int | None = None
    channels: int | None = None
    test_fraction: float | None = None

    def __post_init__(self):
        if self.test_fraction is not None:
            in_range("dataset.test_fraction", self.test_fraction, low=0, high=1, low_open=True)
        if self.channels is not None:
            choice("dataset.channels", self.channels, (1, 3))
        if self.size is not None:
            in_range("dataset.size", self.size, low=4)


@dataclass
class TopSchema:
    seed: int = MISSING
    threads: int = MISSING
    resume: bool = MISSING

    def __post_init__(self):
        in_range("seed", self.seed, low=0)
        in_range("threads", self.threads, low=0)


def validate(cfg: DictConfig) -> None:
    """Check the composed config: each group's schema, then the rules between groups (each
    in one place: the attack's in engine/schema.py, the training's in victim/train_schema.py).
    Raises ConfigError (one line) on the first problem; preflight runs it for every job."""
    check_schema(TopSchema, {"seed": cfg.seed, "threads": cfg.threads, "resume": cfg.resume}, "")
    for group, kind, names in (("dataset", "text dataset", TEXT_DATASETS), ("model", "text victim", TEXT_MODELS)):
        if cfg[group].name in names:
            raise ConfigError(f"{group}={cfg[group].name}: a {kind}; add task=text")
    defense = DEFENSES[cfg.defense.name]
    check_schema(defense.schema, cfg.defense, "defense.", KNOBS)
    check_schema(AttackSchema, cfg.attack, "attack.", KNOBS)
    check_schema(DatasetSchema, cfg.dataset, "dataset.", KNOBS)
    if cfg.train.name != "none":
        if is_text_profile(cfg.train):
            raise ConfigError(f"train={cfg.train.name}: a text training profile; add task=text")
        check_train_config(cfg)
    if cfg.attack.round is not None and cfg.train.name == "none":
        raise ConfigError(f"attack.round={cfg.attack.round}: attacks a training run's round; "
                          "set train=smoke (or another train profile)")
    check_adaptive(attacked_batch(cfg), cfg.defense.name, defense.adaptive(knobs_of(cfg.defense)), defense.per_sample)
    if defense.encode is not None:
        check_encoding(cfg)
    if cfg.get("aggregation") is not None:
        check_aggregation(cfg)


def check_encoding(cfg: DictConfig) -> None:
    """MixUp and InstaHide mix k distinct images of a client's pool: the attacked targets, and
    in training each worker's shard."""
    k, name = cfg.defense.k, cfg.defense.name
    pool = cfg.attack.num_targets * cfg.attack.batch_size
    if cfg.attack.round is None and pool < k:
        raise ConfigError(f"defense={name} k={k}: the client's pool is attack.num_targets x attack.batch_size"
                          f" = {pool} images; at least k are mixed")
    if cfg.train.name != "none" and cfg.train.batch_size // cfg.train.workers < k:
        raise ConfigError(f"defense={name} k={k}: each worker's shard (train.batch_size / train.workers ="
                          f" {cfg.train.batch_size // cfg.train.workers}) must hold at least k images")
    if cfg.get("aggregation") is not None:
        raise ConfigError(f"aggregation={cfg.aggregation.name}: each client holds one image there; defense={name}"
                          " mixes k images of one client's pool")


def check_aggregation(cfg: DictConfig) -> None:
    """aggregation=secure: the attacked update is the mean of attack.batch_size clients' own
    defended gradients at the victim's initial weights (victim/aggregation.py)."""
    choice("aggregation", cfg.aggregation.name, ("secure",))
    why = "with aggregation=secure (each client defends its own one-image gradient)"
    if cfg.attack.adaptive:
        raise ConfigError(f"attack.adaptive=true: no adaptive form is built {why}")
    if cfg.attack.round is not None:
        raise ConfigError(f"attack.round={cfg.attack.round}: secure aggregation is attacked at the initial"
                          " weights only; drop attack.round")
    if cfg.train.get("local_steps", 1) > 1:
        raise ConfigError(f"train.local_steps={cfg.train.local_steps}: allowed 1 {why}")
    if uses_batchnorm(cfg.model.name):
        raise ConfigError(f"model={cfg.model.name}: its BatchNorm has no per-client gradients; use model=lenet")


def attacked_batch(cfg: DictConfig) -> DictConfig:
    """The attack node as the job runs it: attacking a round, its targets are the updates
    of the round's first num_targets clients (at most train.workers), each a local batch."""
    attack = cfg.attack.copy()
    if cfg.attack.round is not None:
        t = cfg.train
        attack.num_targets, attack.batch_size = min(attack.num_targets, t.workers), t.batch_size // t.workers
    return attack
