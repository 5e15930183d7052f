"""Gradient pruning: the `ratio` smallest-magnitude entries of each gradient tensor set to zero."""
from dataclasses import dataclass

import torch
from omegaconf import MISSING

from gradleak.checks import in_range

from .base import AdaptiveForm, Defense, Grads, Setting


@dataclass
class PruneKnobs:
    name: str = MISSING
    ratio: float = MISSING

    def __post_init__(self):
        in_range("ratio", self.ratio, low=0, high=1, high_open=True)


def prune(grads: Grads, *, ratio: float, generator=None, batch_dims: int = 0):
    """Zero exactly round(ratio * n) smallest-magnitude entries of each gradient tensor; among
    equal magnitudes at the cut, the first in memory order go (a stable sort's order)."""
    out = []
    for g in grads:
        flat = g.reshape(*g.shape[:batch_dims], -1)
        k = round(ratio * flat.shape[-1])
        out.append((flat.masked_fill(_smallest(flat.abs(), k), 0.0) if k > 0 else flat.clone()).reshape(g.shape))
    return out


def _smallest(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of the k smallest entries of each row. A selection (kthvalue) instead of a sort:
    it is on the training's path at every step."""
    cut = magnitude.kthvalue(k, dim=-1, keepdim=True).values
    below, at = magnitude < cut, magnitude == cut
    room = k - below.sum(dim=-1, keepdim=True)  # ties at the cut that still go, first ones first
    return below | (at & (at.cumsum(dim=-1) <= room))


def _setting(knobs: dict) -> Setting:
    ratio = float(knobs["ratio"])
    return Setting("prune", "Gradient pruning", ratio, f"{100 * ratio:g}%", ratio)


def mask_by_support(dummy: Grads, defended: Grads) -> list[torch.Tensor]:
    """Only the entries the defended gradient kept enter the match."""
    return [torch.where(t != 0, g, torch.zeros_like(g)) for g, t in zip(dummy, defended)]


def _adaptive(knobs: dict) -> AdaptiveForm:
    return AdaptiveForm(transform=mask_by_support)


DEFENSE = Defense("prune", prune, PruneKnobs, _setting, ("prune",), _adaptive)
