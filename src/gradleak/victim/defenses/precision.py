"""Lower precision: gradients cast down and back (int8: symmetric per-tensor quantization)."""
from dataclasses import dataclass
from functools import partial

import torch
from omegaconf import MISSING

from gradleak.checks import choice

from .base import AdaptiveForm, Defense, Grads, Setting

PRECISIONS = ("fp16", "bf16", "int8")  # mild to coarse


@dataclass
class PrecisionKnobs:
    name: str = MISSING
    precision: str = MISSING

    def __post_init__(self):
        choice("precision", self.precision, PRECISIONS)


def lower_precision(grads: Grads, *, precision: str, generator=None, batch_dims: int = 0):
    """Cast each gradient down to `precision` and back (what the receiver computes with)."""
    if precision == "int8":
        return [_int8_round_trip(g, batch_dims) for g in grads]
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    return [g.to(dtype).to(g.dtype) for g in grads]


def _int8_round_trip(g: torch.Tensor, batch_dims: int) -> torch.Tensor:
    """Symmetric per-tensor quantization to [-127, 127]."""
    flat = g.reshape(*g.shape[:batch_dims], -1)
    scale = flat.abs().amax(dim=-1, keepdim=True) / 127.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(flat / safe).clamp(-127, 127)
    return (q * scale).reshape(g.shape)


def _setting(knobs: dict) -> Setting:
    p = knobs["precision"]
    return Setting("precision", "Lower precision", p, p, float(PRECISIONS.index(p)))


def straight_through(dummy: Grads, defended: Grads, *, precision: str) -> list[torch.Tensor]:
    """The dummy gradient through the same cast as the defended one; its derivative is taken
    as the identity (rounding's own derivative is zero almost everywhere)."""
    rounded = lower_precision(dummy, precision=precision)
    return [g + (r - g).detach() for g, r in zip(dummy, rounded)]


def int8_dead_zone(dummy: Grads, defended: Grads) -> list[torch.Tensor]:
    """Differences below half an int8 step of the defended value do not count: the match sees
    the dummy minus its difference clamped to +-step/2, zero wherever the true gradient could
    be. The step is the defended tensor's own (its largest entry sits on level 127). Unlike
    the quantizer's staircase, this is continuous, so L-BFGS's line search can still work."""
    out = []
    for g, t in zip(dummy, defended):
        half = t.abs().amax() / (2 * 127.0)
        out.append(g - (g - t).clamp(-half, half))
    return out


def _adaptive(knobs: dict) -> AdaptiveForm:
    if knobs["precision"] == "int8":
        return AdaptiveForm(transform=int8_dead_zone)
    return AdaptiveForm(transform=partial(straight_through, precision=knobs["precision"]))


DEFENSE = Defense("precision", lower_precision, PrecisionKnobs, _setting, ("precision",), _adaptive)
