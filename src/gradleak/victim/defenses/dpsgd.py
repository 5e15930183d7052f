"""DP-SGD (Abadi et al., CCS 2016) as a client shares it: each sample's gradient clipped to L2
norm `clip` (all parameters together), the clipped gradients summed, Gaussian noise
N(0, (noise_multiplier * clip)^2) added to every entry, and the sum divided by the batch size.

It works on per-sample gradients (`Defense.per_sample`): callers pass tensors
[*batch, n, *param], the n samples of each gradient at dimension `batch_dims`. Its (epsilon,
delta) guarantee comes from Opacus's accountant (victim/privacy.py).
"""
from dataclasses import dataclass

import torch
from omegaconf import MISSING

from gradleak.checks import in_range

from .base import AdaptiveForm, Defense, Grads, Setting

NORM_EPS = 1e-6  # Opacus's: clip factor = clip / (norm + 1e-6), at most 1


@dataclass
class DpsgdKnobs:
    name: str = MISSING
    clip: float = MISSING
    noise_multiplier: float = MISSING

    def __post_init__(self):
        in_range("clip", self.clip, low=0, low_open=True)
        in_range("noise_multiplier", self.noise_multiplier, low=0)


def clip_per_sample(grads: Grads, clip: float, sample_dim: int) -> list[torch.Tensor]:
    """Scale each sample's gradient (dimension `sample_dim` indexes samples) to norm <= clip."""
    norms = sum(g.flatten(sample_dim + 1).pow(2).sum(-1) for g in grads).sqrt()
    factor = (clip / (norms + NORM_EPS)).clamp(max=1.0)
    return [g * factor.reshape(*factor.shape, *[1] * (g.dim() - factor.dim())) for g in grads]


def dpsgd(grads: Grads, *, clip: float, noise_multiplier: float, generator=None, batch_dims: int = 0):
    """Per-sample gradients [*batch, n, *param] -> the noisy clipped mean [*batch, *param]."""
    n = grads[0].shape[batch_dims]
    std = noise_multiplier * clip
    out = []
    for g in clip_per_sample(grads, clip, batch_dims):
        total = g.sum(batch_dims)
        noise = torch.randn(total.shape, generator=generator, dtype=total.dtype, device=total.device)
        out.append((total + std * noise) / n)
    return out


def _setting(knobs: dict) -> Setting:
    z, c = float(knobs["noise_multiplier"]), float(knobs["clip"])
    return Setting("dpsgd", "DP-SGD", z, f"z={z:g} (C={c:g})", z)


def _adaptive(knobs: dict) -> AdaptiveForm:
    """The attacker clips its dummy gradient as the client clipped the true one. The dummy
    gradient is one sample's (attack.batch_size=1, checked by the attack), so this is the
    defended gradient's expectation; the noise is Gaussian, so the match stays L2."""
    clip = float(knobs["clip"])

    def clip_dummy(dummy: Grads, defended: Grads) -> list[torch.Tensor]:
        return [g[0] for g in clip_per_sample([g[None] for g in dummy], clip, 0)]  # one sample

    return AdaptiveForm(transform=clip_dummy)


DEFENSE = Defense("dpsgd", dpsgd, DpsgdKnobs, _setting, ("dpsgd",), _adaptive, per_sample=True)
