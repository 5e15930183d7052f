"""Config schema: every group's options, value types and ranges, checked with OmegaConf.

`validate(cfg)` raises ConfigError with one line naming the key as the user spells it,
the value and what is allowed. Types are checked by OmegaConf's structured configs;
ranges and choices by each schema's __post_init__.
"""
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

# Knobs that live at the top level of the command line (defense=noise scale=1e-3).
KNOBS = ("noise", "scale", "ratio", "precision", "path")


class ConfigError(ValueError):
    """A user mistake in the config; the message is one line."""


def _fail(key: str, value: Any, allowed: str):
    raise ConfigError(f"{key}={value}: allowed {allowed}")


def _choice(key, value, options):
    if value not in options:
        _fail(key, value, "values are " + ", ".join(map(str, options)))


def _range(key, value, low=None, high=None, low_open=False, high_open=False):
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
        _fail(key, value, f"range is {lo}{key}{hi}")


@dataclass
class NoDefense:
    name: str = "none"


@dataclass
class NoiseDefense:
    name: str = "noise"
    noise: str = "gaussian"
    scale: float = 1e-3

    def __post_init__(self):
        _choice("noise", self.noise, ("gaussian", "laplacian"))
        _range("scale", self.scale, low=0)


@dataclass
class PruneDefense:
    name: str = "prune"
    ratio: float = 0.2

    def __post_init__(self):
        _range("ratio", self.ratio, low=0, high=1, high_open=True)


@dataclass
class PrecisionDefense:
    name: str = "precision"
    precision: str = "fp16"

    def __post_init__(self):
        _choice("precision", self.precision, ("fp16", "bf16", "int8"))


DEFENSE_SCHEMAS = {"none": NoDefense, "noise": NoiseDefense, "prune": PruneDefense,
                   "precision": PrecisionDefense}


@dataclass
class AttackSchema:
    name: str = "dlg"
    num_targets: int = 8
    batch_size: int = 1
    labels: str = "soft"
    restarts: int = 1
    steps: int = 300
    optimizer: str = "lbfgs"
    lr: float = 1.0
    max_iter: int = 20
    history_size: int = 100
    line_search: str = "none"
    divergence_factor: float = 1e4
    success_mse: float = 1e-3
    chunk_size: int = 0
    compile: bool = False
    snapshots: int = 6

    def __post_init__(self):
        for key in ("num_targets", "batch_size", "restarts", "max_iter", "history_size"):
            _range(f"attack.{key}", getattr(self, key), low=1)
        for key in ("steps", "chunk_size", "snapshots"):
            _range(f"attack.{key}", getattr(self, key), low=0)
        _choice("attack.labels", self.labels, ("soft", "idlg"))
        if self.labels == "idlg" and self.batch_size != 1:
            _fail("attack.labels", "idlg", "with attack.batch_size=1 only (iDLG's label rule)")
        _choice("attack.optimizer", self.optimizer, ("lbfgs", "adam"))
        _choice("attack.line_search", self.line_search, ("none", "backtracking"))
        _range("attack.lr", self.lr, low=0, low_open=True)
        _range("attack.divergence_factor", self.divergence_factor, low=1, low_open=True)
        _range("attack.success_mse", self.success_mse, low=0, low_open=True)


@dataclass
class DatasetSchema:
    name: str = "digits"
    data_dir: Optional[str] = None
    path: Optional[str] = None
    size: Optional[int] = None
    channels: int = 3
    test_fraction: float = 0.2

    def __post_init__(self):
        _range("dataset.test_fraction", self.test_fraction, low=0, high=1, low_open=True)
        _choice("dataset.channels", self.channels, (1, 3))
        if self.size is not None:
            _range("dataset.size", self.size, low=4)


@dataclass
class TopSchema:
    seed: int = 0
    threads: int = 0
    resume: bool = False

    def __post_init__(self):
        _range("seed", self.seed, low=0)
        _range("threads", self.threads, low=0)


def validate(cfg: DictConfig) -> None:
    """Check the composed config; raises ConfigError (one line) on the first problem."""
    _check(TopSchema, {"seed": cfg.seed, "threads": cfg.threads, "resume": cfg.resume}, "")
    _check(DEFENSE_SCHEMAS[cfg.defense.name], cfg.defense, "defense.")
    _check(AttackSchema, cfg.attack, "attack.")
    _check(DatasetSchema, cfg.dataset, "dataset.")
    if cfg.train.name != "none":
        from gradleak.training import check_train_config  # the train profile's own rules

        check_train_config(cfg)


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
    return first
