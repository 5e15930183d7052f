"""Soteria (Sun et al., CVPR 2021): perturb the representation layer's gradient.

The representation r is the input of the model's last linear layer (LeNet: the flattened
convolution features). For each of its features f, the client scores how much the data
shows through it, sum over its images i of ||d r_if / d x_i|| / r_if (the paper's
approximation of ||r (dr/dx)^-1||), and zeroes the last linear layer's weight gradient in the
columns of the `percent`% features of smallest absolute score (numpy's linear percentile,
as the authors' code draws the cut); every other gradient is shared as it is. The scores
need the client's images and model, so this defense is given them (`Defense.needs_data`).

Its adaptive attack (Balunovic et al., ICLR 2022, who show that an attacker who knows the
defense breaks it): the zeroed columns are visible in the shared gradient, so the attacker
zeroes them in its dummy gradient too (`prune.mask_by_support`) and matches everything else,
the unperturbed layers included.
"""
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import nn
from torch.func import jacrev, vmap

from gradleak.checks import in_range

from .base import AdaptiveForm, Defense, Grads, Setting
from .conv_jacobian import conv_chain, feature_gradient_norms
from .prune import mask_by_support


@dataclass
class SoteriaKnobs:
    name: str = MISSING
    percent: float = MISSING

    def __post_init__(self):
        in_range("percent", self.percent, low=0, high=100, high_open=True)


def last_linear(model: nn.Module) -> nn.Linear:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1]


def representation(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Images [b, C, H, W] (or one, [C, H, W]) -> the input of the model's last linear
    layer [b, F] (or [F])."""
    seen = {}
    handle = last_linear(model).register_forward_pre_hook(lambda m, args: seen.__setitem__("r", args[0]))
    try:
        model(images if images.dim() == 4 else images[None])
    finally:
        handle.remove()
    return seen["r"] if images.dim() == 4 else seen["r"][0]


def feature_scores(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """images [b, C, H, W] -> per feature, sum_i ||d r_if / d x_i|| / r_if  [F]."""
    local = conv_chain_norms(model, images)
    norms, r = local if local is not None else reverse_mode_norms(model, images)
    return (norms / r).sum(0)


def conv_chain_norms(model: nn.Module, images: torch.Tensor):
    """(||d r_f / d x||, r) per image [b, F] by local Jacobians (conv_jacobian), where the
    representation is the flattened output of the model's `body`, a chain of convolutions and
    sigmoids (the LeNet); else None."""
    pairs = conv_chain(getattr(model, "body", None))
    if pairs is None:
        return None
    norms, r = feature_gradient_norms(pairs, images)
    seen = representation(model, images)
    return (norms, r) if seen.shape == r.shape and torch.allclose(seen, r, rtol=1e-5, atol=1e-6) else None


def reverse_mode_norms(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(||d r_f / d x||, r) per image [b, F]: one backward pass per feature, any model."""
    def one(x):
        jacobian = jacrev(lambda y: representation(model, y))(x)  # [F, C, H, W]
        return jacobian.flatten(1).norm(dim=1), representation(model, x)
    return vmap(one)(images)


def feature_mask(scores: torch.Tensor, percent: float) -> torch.Tensor:
    """1 where a feature is kept: |score| at or above the percent-th percentile of |scores|."""
    cut = torch.quantile(scores.abs().double(), percent / 100)  # linear, as numpy.percentile
    return (scores.abs() >= cut).to(scores.dtype)


def soteria(grads: Grads, *, percent: float, data, generator=None, batch_dims: int = 0) -> list[torch.Tensor]:
    """grads [*batch, *param] in model.named_parameters() order; data = (model, images
    [*batch, b, C, H, W]): each gradient's own images. The last linear weight's columns of
    the low-scoring features are zeroed per gradient."""
    model, images = data
    weight = last_linear(model).weight
    at = [i for i, p in enumerate(model.parameters()) if p is weight][0]
    lead = grads[at].shape[:batch_dims]
    with torch.no_grad():
        masks = torch.stack([feature_mask(feature_scores(model, x.detach()), percent)
                             for x in images.reshape(-1, *images.shape[batch_dims:])])
    out = [g.clone() for g in grads]
    out[at] = grads[at] * masks.reshape(*lead, 1, masks.shape[-1]).to(grads[at].dtype)
    return out


def _setting(knobs: dict) -> Setting:
    p = float(knobs["percent"])
    return Setting("soteria", "Soteria", p, f"{p:g}% of features", p)


def _adaptive(knobs: dict) -> AdaptiveForm:
    return AdaptiveForm(transform=mask_by_support)


DEFENSE = Defense("soteria", soteria, SoteriaKnobs, _setting, ("soteria",), _adaptive, needs_data=True)
