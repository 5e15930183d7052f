"""Gradient defenses: one function per defense, shared by the attack and by training.

Every function takes a list of gradient tensors and returns a new list. Leading
`batch_dims` dimensions index independent gradients (attack problems, training workers):
per-tensor rules such as pruning ratios and int8 scales apply to each of them separately.
"""
from typing import Callable, Sequence

import torch

Grads = Sequence[torch.Tensor]


def no_defense(grads: Grads, *, generator=None, batch_dims: int = 0) -> list[torch.Tensor]:
    return [g.clone() for g in grads]


def add_noise(grads: Grads, *, noise: str, scale: float, generator=None,
              batch_dims: int = 0) -> list[torch.Tensor]:
    """Additive noise: Gaussian with std `scale`, or Laplacian with scale b = `scale`."""
    sample = NOISE_SAMPLERS[noise]
    return [g + scale * sample(g, generator) for g in grads]


def noise_variance(noise: str, scale: float) -> float:
    return scale**2 if noise == "gaussian" else 2 * scale**2


def _standard_gaussian(like: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


def _standard_laplace(like: torch.Tensor, generator) -> torch.Tensor:
    # Inverse CDF: torch.distributions.Laplace cannot take a seeded generator.
    u = torch.rand(like.shape, generator=generator, dtype=like.dtype, device=like.device) - 0.5
    tiny = torch.finfo(like.dtype).tiny
    return -torch.sign(u) * torch.log((1 - 2 * u.abs()).clamp_min(tiny))


NOISE_SAMPLERS: dict[str, Callable] = {"gaussian": _standard_gaussian, "laplacian": _standard_laplace}


def prune(grads: Grads, *, ratio: float, generator=None, batch_dims: int = 0) -> list[torch.Tensor]:
    """Zero exactly round(ratio * n) smallest-magnitude entries of each gradient tensor."""
    out = []
    for g in grads:
        flat = g.reshape(*g.shape[:batch_dims], -1)
        k = round(ratio * flat.shape[-1])
        pruned = flat.clone()
        if k > 0:
            smallest = flat.abs().argsort(dim=-1, stable=True)[..., :k]
            pruned.scatter_(-1, smallest, 0.0)
        out.append(pruned.reshape(g.shape))
    return out


def lower_precision(grads: Grads, *, precision: str, generator=None,
                    batch_dims: int = 0) -> list[torch.Tensor]:
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


DEFENSES: dict[str, Callable] = {
    "none": no_defense,
    "noise": add_noise,
    "prune": prune,
    "precision": lower_precision,
}


def defense_from_config(defense_cfg) -> Callable[..., list[torch.Tensor]]:
    """A callable grads -> defended grads for a `defense` config node (name + knobs)."""
    knobs = {k: v for k, v in dict(defense_cfg).items() if k not in ("name", "variance")}
    fn = DEFENSES[defense_cfg["name"]]

    def apply(grads: Grads, generator=None, batch_dims: int = 0) -> list[torch.Tensor]:
        return fn(grads, generator=generator, batch_dims=batch_dims, **knobs)

    return apply
