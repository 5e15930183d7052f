"""Config checks shared by every schema: a user mistake is one ConfigError line naming the
key as the user spells it, the value and what is allowed. Torch-free, so that the
schemas of every package can use it."""
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A user mistake in the config; the message is one line."""


def fail(key: str, value: Any, allowed: str):
    raise ConfigError(f"{key}={value}: allowed {allowed}")


def choice(key: str, value, options) -> None:
    if value not in options:
        fail(key, value, "values are " + ", ".join(map(str, options)))


def in_range(key: str, value, low=None, high=None, low_open=False, high_open=False) -> None:
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        lo = "" if low is None else f"{low} {'<' if low_open else '<='} "
        hi = "" if high is None else f" {'<' if high_open else '<='} {high}"
        fail(key, value, f"range is {lo}{key}{hi}")


def check_schema(schema, node, prefix: str, top_level: tuple[str, ...] = ()) -> None:
    """Types (OmegaConf's structured config) and ranges (the schema's __post_init__) of one
    config group `node`, named as the user spells them: `prefix` + key, or the key alone
    for `top_level` knobs (defense=noise scale=...)."""
    try:
        if isinstance(node, DictConfig):  # resolve first: knobs interpolate from the root
            node = OmegaConf.to_container(node, resolve=True)
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    except OmegaConfBaseException as exc:
        key = str(exc.full_key or "")
        shown = key if key in top_level else prefix + key
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
