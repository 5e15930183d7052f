"""MixUp and InstaHide: the client shares the gradient of encoded images, never its own.

As GradAttack evaluates them (Huang et al., NeurIPS 2021): each image x_j of the client's
pool is replaced by a mix of k distinct pool images, itself first,
e_j = sum_i lam_ji x_{s_ji}, with its labels mixed the same way (soft labels);
lam_j ~ Dirichlet(3, 1, ..., 1), redrawn until every coefficient lies in [lower, upper]
(GradAttack's c_1, c_2); s_j0 = j, the other k - 1 drawn without repetition. InstaHide
(Huang et al., ICML 2020) also flips the sign of each pixel of the mix at random. Its
authors flip pixels normalized by the data's mean (and std, which a linear first layer
absorbs), so the flip is about the data's mean pixel c, per channel: p -> 2c - p (on raw
[0, 1] pixels |e| would undo it; about the middle of the range, nearly black-or-white
digits would keep nothing but their mixed grey levels). The client takes c from its own pool.
The pool is what the client holds: in an attack, the job's targets; in training, a
worker's shard at each step.

The attack that breaks them, GradAttack's two steps: gradient inversion recovers each
encoding (any attacker; the dummy labels are soft), then the decode of Carlini et al. ("Is
Private Learning Possible with Instance Encoding?", S&P 2021), which GradAttack runs with
the mapping and the coefficients known to the attacker (its upper bound on leakage):
MixUp's encodings are linear in the pool, so least squares recovers it; InstaHide's keep
only the magnitude of each centred mix, which Adam fits, pixel by pixel (the attacker knows
the centre, as it knows the normalization).
"""
from dataclasses import dataclass

import numpy as np
import torch
from omegaconf import MISSING

from gradleak.checks import in_range

from .base import AdaptiveForm, Defense, Grads, Setting

DIRICHLET_FIRST = 3.0  # GradAttack's alpha: the client's own image has the largest share on average
DECODE_STEPS, DECODE_LR = 1000, 0.01  # Carlini et al.'s InstaHide decode


@dataclass
class MixKnobs:
    name: str = MISSING
    k: int = MISSING        # images mixed into each encoding
    lower: float = MISSING  # every mixing coefficient in [lower, upper]
    upper: float = MISSING

    def __post_init__(self):
        in_range("k", self.k, low=2)  # k = 1 is no mix: defense=none
        in_range("lower", self.lower, low=0, high=1 / self.k, high_open=True)  # room for the draw
        in_range("upper", self.upper, low=1 / self.k, high=1, low_open=True)


@dataclass(frozen=True)
class Encoding:
    """What a client's encoding drew: images and soft labels encoded ([N, ...]), and for the
    attacker's decode, each encoding's coefficients [N, k] and pool indices [N, k], and
    InstaHide's flip centre (the pool's mean pixel per channel, [C, 1, 1])."""
    images: torch.Tensor
    soft_labels: torch.Tensor
    coefficients: torch.Tensor
    sources: torch.Tensor
    centre: torch.Tensor | None = None

    def mixing_matrix(self) -> torch.Tensor:
        """[N, N]: encoding j = row j @ pool."""
        n = len(self.sources)
        m = torch.zeros(n, n, dtype=self.coefficients.dtype)
        return m.index_put_((torch.arange(n)[:, None].expand_as(self.sources), self.sources),
                            self.coefficients, accumulate=True)


def draw_mixing(n: int, k: int, lower: float, upper: float,
                generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients [n, k] (rows on the simplex, within [lower, upper]) and pool indices
    [n, k] (row j: j, then k - 1 other distinct indices)."""
    if n < k:
        raise ValueError(f"k={k} mixes {k} distinct images, but the client's pool holds {n}")
    rng = np.random.default_rng(int(torch.randint(2**62, (1,), generator=generator)))
    alpha = [DIRICHLET_FIRST] + [1.0] * (k - 1)
    coefficients = rng.dirichlet(alpha, size=n)
    for row in coefficients:
        while k > 1 and (row.max() > upper or row.min() < lower):
            row[:] = rng.dirichlet(alpha)
    others = [rng.choice(np.delete(np.arange(n), j), k - 1, replace=False) for j in range(n)]
    return coefficients, np.column_stack([np.arange(n), np.stack(others)]).astype(np.int64)


def encode(images: torch.Tensor, labels: torch.Tensor, num_classes: int, *, k: int, lower: float, upper: float,
           flip: bool, generator: torch.Generator) -> Encoding:
    """images [N, C, H, W] in [0, 1], labels [N] -> the pool's encodings."""
    coefficients, sources = draw_mixing(len(images), k, lower, upper, generator)
    lam = torch.as_tensor(coefficients, dtype=images.dtype, device=images.device)
    src = torch.as_tensor(sources, device=images.device)
    mixed = torch.einsum("nk,nk...->n...", lam, images[src])
    soft = torch.einsum("nk,nkc->nc", lam, torch.nn.functional.one_hot(labels[src], num_classes).to(images.dtype))
    centre = None
    if flip:
        centre = images.mean(dim=(0, 2, 3))[:, None, None]
        sign = torch.randint(2, mixed.shape, generator=generator, device=images.device).to(images.dtype) * 2 - 1
        mixed = centre + sign * (mixed - centre)
    return Encoding(mixed, soft, lam.cpu(), src.cpu(), None if centre is None else centre.cpu())


def decode_mixup(encoded: torch.Tensor, encoding: Encoding) -> torch.Tensor:
    """The pool that explains the recovered encodings [N, ...] best (least squares)."""
    flat = encoded.reshape(len(encoded), -1)
    mix = encoding.mixing_matrix().to(flat)
    return torch.linalg.lstsq(mix, flat).solution.reshape(encoded.shape)


def decode_instahide(encoded: torch.Tensor, encoding: Encoding) -> torch.Tensor:
    """The pool whose mixes, centred on the flip centre, have the recovered encodings'
    magnitudes (Adam, from mid-grey; each pixel's sign is the branch that explains it best,
    ties to the dark one). Carlini et al. also pull each pixel to black or white, a prior for
    their images that leaves digits no better decoded than all black (docs/attack.md)."""
    centre = encoding.centre.to(encoded)
    with torch.enable_grad():
        magnitude = (encoded.detach() - centre).abs().reshape(len(encoded), -1)
        mix = encoding.mixing_matrix().to(magnitude)
        signed = torch.zeros_like(encoded, requires_grad=True)  # 2 x pool - 1: Carlini et al.'s [-1, 1] pixels
        opt = torch.optim.Adam([signed], lr=DECODE_LR)
        for _ in range(DECODE_STEPS):
            m = mix @ ((signed + 1) / 2 - centre).reshape(len(encoded), -1)
            same, flipped = magnitude - m, -(magnitude + m)
            residual = torch.where(same.abs() < flipped.abs(), same, flipped)
            loss = residual.pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return ((signed.detach().clamp(-1, 1) + 1) / 2)


def unchanged(grads: Grads, *, generator=None, batch_dims: int = 0, **knobs) -> list[torch.Tensor]:
    """The gradient of the encodings is shared as it is: the encoding was the defense."""
    return [g.clone() for g in grads]


def _setting(title: str):
    def setting(knobs: dict) -> Setting:
        k = int(knobs["k"])
        return Setting(title.lower(), title, k, f"k = {k}", k)
    return setting


def _adaptive(decode):
    return lambda knobs: AdaptiveForm(decode=decode)


def _encoder(flip: bool):
    def encoder(images, labels, num_classes, *, generator, k, lower, upper):
        return encode(images, labels, num_classes, k=k, lower=lower, upper=upper, flip=flip, generator=generator)
    return encoder


MIXUP = Defense("mixup", unchanged, MixKnobs, _setting("MixUp"), ("mixup",), _adaptive(decode_mixup),
                encode=_encoder(flip=False))
INSTAHIDE = Defense("instahide", unchanged, MixKnobs, _setting("InstaHide"), ("instahide",),
                    _adaptive(decode_instahide), encode=_encoder(flip=True))
