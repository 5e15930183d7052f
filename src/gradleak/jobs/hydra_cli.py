"""Hydra's command line as run.py will read it, without launching anything.

Hydra has no public API for parsing its own command line (`hydra.main` parses argv
inside): `get_args_parser` from hydra._internal is that parser, so preflight reads argv
exactly as Hydra will. This module is the one place that imports Hydra's internals. The
sweep expansion uses the public override API and follows the basic sweeper's order.
"""
import itertools

from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from omegaconf import OmegaConf


def parse_command_line(argv: list[str]):
    """Hydra's argparse namespace: overrides, multirun, help flags, --cfg."""
    return get_args_parser().parse_args(argv)


def parse_overrides(overrides: list[str]) -> list[Override]:
    return OverridesParser.create().parse_overrides(list(overrides))


def sweeper_params(cfg) -> list[str]:
    """The overrides a config's `hydra.sweeper.params` adds to a multirun (an experiment's
    grid, conf/experiment), written as the basic sweeper writes them, before the command line's."""
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return [f"{k}={v}" for k, v in params.items()]


def as_swept(overrides: list[str]) -> list[str]:
    """The overrides as the basic sweeper reads them: a key given twice (an experiment's grid,
    then the command line) takes its last value at its first place."""
    by_key = {}
    for text, parsed in zip(overrides, parse_overrides(overrides)):
        by_key[parsed.key_or_group] = text
    return list(by_key.values())


def expand_sweep(parsed: list[Override]) -> list[list[str]]:
    """The jobs of `-m`: the cartesian product of every sweep override's values."""
    choices = []
    for o in parsed:
        key = o.get_key_element()
        if o.is_sweep_override():
            choices.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            choices.append([f"{key}={o.get_value_element_as_str()}"])
    return [list(job) for job in itertools.product(*choices)]
