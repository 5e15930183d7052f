"""No defense: the attacker sees the true gradient."""
from dataclasses import dataclass

from omegaconf import MISSING

from .base import AdaptiveForm, Defense, Grads, Setting


@dataclass
class NoneKnobs:
    name: str = MISSING


def no_defense(grads: Grads, *, generator=None, batch_dims: int = 0):
    return [g.clone() for g in grads]


def _setting(knobs: dict) -> Setting:
    return Setting("none", "undefended", None, "undefended", 0.0)


def _adaptive(knobs: dict) -> AdaptiveForm:
    return AdaptiveForm()  # nothing to attack through: the plain attack


DEFENSE = Defense("none", no_defense, NoneKnobs, _setting, ("none",), _adaptive)
