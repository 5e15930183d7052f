"""The job's config schema: each group's options, value types and ranges, checked with OmegaConf.

Values (defaults) live in the YAML files under conf/ only; the schemas here and beside
each defense (victim/defenses), the attack (engine/schema.py) and its stop rules
(engine/stopping.py) hold types and ranges.
`validate(cfg)` raises ConfigError with one line naming the key as the user spells it,
the value and what is allowed. Types are checked by OmegaConf's structured configs;
ranges and choices by each schema's __post_init__.
"""
from dataclasses import dataclass

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gradleak.checks import ConfigError, choice, in_range
from gradleak.engine.schema import AttackSchema, check_adaptive_per_sample
from gradleak.victim.defenses import DEFENSES, knobs_of
from gradleak.victim.defenses import KNOBS as DEFENSE_KNOBS

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
    """Check the composed config; raises ConfigError (one line) on the first problem."""
    _check(TopSchema, {"seed": cfg.seed, "threads": cfg.threads, "resume": cfg.resume}, "")
    _check(DEFENSES[cfg.defense.name].schema, cfg.defense, "defense.")
    _check(AttackSchema, cfg.attack, "attack.")
    if cfg.attack.adaptive and DEFENSES[cfg.defense.name].adaptive(knobs_of(cfg.defense)) is None:
        raise ConfigError(f"attack.adaptive=true: defense={cfg.defense.name} has no adaptive form")
    _check(DatasetSchema, cfg.dataset, "dataset.")
    if cfg.train.name != "none":
        from gradleak.victim.training import check_train_config  # Lightning: only when training

        check_train_config(cfg)
    if cfg.attack.round is not None and cfg.train.name == "none":
        raise ConfigError(f"attack.round={cfg.attack.round}: attacks a training run's round; "
                          "set train=smoke (or another train profile)")
    check_adaptive_per_sample(attacked_batch(cfg), DEFENSES[cfg.defense.name].per_sample)


def attacked_batch(cfg: DictConfig) -> DictConfig:
    """The attack node as the job runs it: attacking a round, its targets are the updates
    of the round's first num_targets clients (at most train.workers), each a local batch."""
    attack = cfg.attack.copy()
    if cfg.attack.round is not None:
        t = cfg.train
        attack.num_targets, attack.batch_size = min(attack.num_targets, t.workers), t.batch_size // t.workers
    return attack


def _check(schema, node, prefix: str) -> None:
    try:
        if isinstance(node, DictConfig):  # resolve first: knobs interpolate from the root
            node = OmegaConf.to_container(node, resolve=True)
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except OmegaConfBaseException as exc:
        key = str(exc.full_key or "")
        shown = key if key in KNOBS else prefix + key
        raise ConfigError(f"{shown}={_value_of(node, key)}: {_reason(exc, key)}") from None


def _value_of(node: dict, key: str):
    return node.get(key, "?") if isinstance(node, dict) else "?"


def _reason(exc: OmegaConfBaseException, key: str) -> str:
    first = str(exc).splitlines()[0]
    if "could not be converted to" in first:  # "Value 'abc' of type 'str' could not be converted to Float"
        return "allowed values of type " + first.rsplit(" ", 1)[-1].lower()
    if "is not a valid bool" in first:
        return "allowed values are true, false"
    if "not in struct" in first or ("Key '" in first and "not in" in first):
        return f"unknown key '{key}'"
    if "Missing mandatory value" in first:
        return "missing: its conf/ group file must set it"
    return first
