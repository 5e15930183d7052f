"""No defense: the attacker sees the true gradient."""
from dataclasses import dataclass

from omegaconf import MISSING

from .base import Defense, Grads, Setting


@dataclass
class NoneKnobs:
    name: str = MISSING


def no_defense(grads: Grads, *, generator=None, batch_dims: int = 0):
    return [g.clone() for g in grads]


def _setting(knobs: dict) -> Setting:
    return Setting("none", "undefended", None, "undefended", 0.0)


DEFENSE = Defense("none", no_defense, NoneKnobs, _setting, ("none",))
