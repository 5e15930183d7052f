"""Gradient defenses, one module each, registered here: the one place that lists them.

A new defense is one module (its transform, knob schema and setting names, as a
`base.Defense`) added to REGISTERED, plus `conf/defense/<name>.yaml` with its knobs.
"""
from collections.abc import Callable

import torch

from . import noise, none, precision, prune
from .base import Defense, Grads, Setting

REGISTERED: tuple[Defense, ...] = (none.DEFENSE, noise.DEFENSE, precision.DEFENSE, prune.DEFENSE)
DEFENSES: dict[str, Defense] = {d.name: d for d in REGISTERED}
FAMILY_ORDER: tuple[str, ...] = tuple(f for d in REGISTERED for f in d.families)
# Top-level command-line knobs (defense=noise scale=1e-3): every defense's schema fields.
KNOBS: tuple[str, ...] = tuple(dict.fromkeys(
    k for d in REGISTERED for k in d.schema.__dataclass_fields__ if k != "name"))


def knobs_of(defense_cfg) -> dict:
    return {k: v for k, v in dict(defense_cfg).items() if k != "name"}


def defense_from_config(defense_cfg) -> Callable[..., list[torch.Tensor]]:
    """A callable grads -> defended grads for a `defense` config node (name + knobs)."""
    fn, knobs = DEFENSES[defense_cfg["name"]].apply, knobs_of(defense_cfg)

    def apply(grads: Grads, generator=None, batch_dims: int = 0) -> list[torch.Tensor]:
        return fn(grads, generator=generator, batch_dims=batch_dims, **knobs)

    return apply


def setting_of(defense_cfg) -> dict:
    """How the config's defense setting is named, with its family's display rank."""
    s = DEFENSES[defense_cfg["name"]].setting(knobs_of(defense_cfg))
    return {**s.__dict__, "family_rank": FAMILY_ORDER.index(s.family)}


__all__ = ["DEFENSES", "FAMILY_ORDER", "KNOBS", "Defense", "Setting", "defense_from_config", "setting_of"]
