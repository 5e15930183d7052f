"""Config checks shared by every schema: a user mistake is one ConfigError line naming the
key as the user spells it, the value and what is allowed. Torch-free, so that the
schemas of every package can use it."""
from typing import Any


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
