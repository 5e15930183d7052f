"""Additive noise of standard deviation `scale`, Gaussian or Laplacian: equal knob values
give equal variances (scale^2; the Laplacian's b is scale / sqrt 2), so the paper's noise
levels, which are variances, are the same settings for both."""
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from omegaconf import MISSING

from gradleak.checks import choice, in_range

from .base import AdaptiveForm, Defense, Grads, Setting

NOISES = ("gaussian", "laplacian")


@dataclass
class NoiseKnobs:
    name: str = MISSING
    noise: str = MISSING
    scale: float = MISSING

    def __post_init__(self):
        choice("noise", self.noise, NOISES)
        in_range("scale", self.scale, low=0)


def add_noise(grads: Grads, *, noise: str, scale: float, generator=None, batch_dims: int = 0):
    sample = NOISE_SAMPLERS[noise]  # unit variance
    return [g + scale * sample(g, generator) for g in grads]


def noise_variance(noise: str, scale: float) -> float:
    return scale**2


def _standard_gaussian(like: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def _unit_laplace(like: torch.Tensor, generator) -> torch.Tensor:
    """Laplace(0, b = 1/sqrt 2): variance 2 b^2 = 1."""
    # Inverse CDF: torch.distributions.Laplace cannot take a seeded generator.
    u = torch.rand(like.shape, generator=generator, dtype=like.dtype, device=like.device) - 0.5
    tiny = torch.finfo(like.dtype).tiny
    return -torch.sign(u) * torch.log((1 - 2 * u.abs()).clamp_min(tiny)) / math.sqrt(2)


NOISE_SAMPLERS: dict[str, Callable] = {"gaussian": _standard_gaussian, "laplacian": _unit_laplace}


def _setting(knobs: dict) -> Setting:
    noise, scale = knobs["noise"], float(knobs["scale"])
    var = noise_variance(noise, scale)
    return Setting(f"noise-{noise}", f"{noise.capitalize()} noise", scale,
                   f"var {var:.0e} (σ={scale:.2g})", scale, var)


def _adaptive(knobs: dict) -> AdaptiveForm:
    """Match by the noise's negative log-likelihood: L1 for Laplace, squared L2 for Gauss."""
    return AdaptiveForm(match={"gaussian": "l2", "laplacian": "l1"}[knobs["noise"]])


DEFENSE = Defense("noise", add_noise, NoiseKnobs, _setting, tuple(f"noise-{n}" for n in NOISES),
                  _adaptive)
