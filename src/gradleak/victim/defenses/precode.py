"""PRECODE (Scheliga et al., WACV 2022): a variational bottleneck before the output layer.

A model-side defense: the victim's representation r (the input of its last linear layer) goes
through an encoder to a mean mu and a scale sigma = softplus(.) of K latent features, a sample
z = mu + sigma * eps with eps ~ N(0, I) drawn by the client for each image, and a decoder back to
r's size, then the model's own output layer. The client trains on cross-entropy plus beta times
the KL divergence of N(mu, sigma^2) from N(0, I) in bits (the authors' loss). The gradient it
shares is exact for its own draw of eps, which nobody else sees: the defense is that randomness.
At test time the model runs on the mean (eps = 0). The shared gradient itself is not changed,
so `apply` is the identity and `extend_model` builds the bottleneck into the victim.

Attackers who do not know the draw run the client's loss at the bottleneck's mean (eps = 0,
the prior's mode). Its adaptive attack treats the client's eps as unknowns of the attack, solved
jointly with the image (as DLG solves for the label), so the gradient match is zero at the true
image whatever eps was. The published adaptive attack (Scheliga et al., 2022, arXiv 2208.04767)
instead leaves the bottleneck's and later layers' gradients out of the match; the earlier
layers' gradients still carry eps through the backward pass, so solving for eps is the stronger
form (docs/attack.md).
"""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import nn

from gradleak.checks import in_range

from .base import AdaptiveForm, Defense, Grads, Setting
from .none import no_defense


@dataclass
class PrecodeKnobs:
    name: str = MISSING
    bottleneck: int = MISSING   # K, the latent features (the authors': 256)
    beta: float = MISSING       # the KL term's weight in the client's loss (the authors': 1e-3)

    def __post_init__(self):
        in_range("bottleneck", self.bottleneck, low=1)
        in_range("beta", self.beta, low=0)


class VariationalBottleneck(nn.Module):
    """r [n, F] -> (decoded [n, F], beta * KL in bits, mean over the n images)."""

    def __init__(self, features: int, latent: int, beta: float):
        super().__init__()
        self.latent, self.beta = latent, beta
        self.encoder = nn.Linear(features, 2 * latent)
        self.decoder = nn.Linear(latent, features)

    def forward(self, r: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.encoder(r)
        mu, sigma = stats[:, :self.latent], F.softplus(stats[:, self.latent:])
        z = mu if noise is None else mu + sigma * noise
        kl = 0.5 * (mu ** 2 + sigma ** 2 - 1 - 2 * torch.log(sigma)).sum(1).mean() / math.log(2)
        return self.decoder(z), self.beta * kl


class Precode(nn.Module):
    """The victim with PRECODE between its representation and its output layer.

    forward(x) is the test-time model (the mean, eps = 0); forward(x, noise) with the client's
    noise [n, K] returns (logits, beta * KL): what the client's loss adds up
    (victim/gradients.py:model_loss)."""

    def __init__(self, victim: nn.Module, latent: int, beta: float):
        super().__init__()
        parent, name, head = _last_linear(victim)
        setattr(parent, name, nn.Identity())  # the victim now ends at its representation
        self.features, self.noise_size = victim, latent
        self.bottleneck = VariationalBottleneck(head.in_features, latent, beta)
        self.head = head  # registered last: the output layer stays the model's last linear layer

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        decoded, penalty = self.bottleneck(self.features(x), noise)
        logits = self.head(decoded)
        return logits if noise is None else (logits, penalty)


def _last_linear(model: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """(its parent, its attribute name, the module) of the model's last linear layer."""
    name = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][-1]
    parent_name, _, attr = name.rpartition(".")
    return model.get_submodule(parent_name), attr, model.get_submodule(name)


def extend(model: nn.Module, *, bottleneck: int, beta: float) -> Precode:
    """The victim model with PRECODE (its new layers drawn from the global stream, PyTorch's init)."""
    return Precode(model, bottleneck, beta)


def unchanged(grads: Grads, *, generator=None, batch_dims: int = 0, **knobs) -> list[torch.Tensor]:
    return no_defense(grads)


def _setting(knobs: dict) -> Setting:
    k = int(knobs["bottleneck"])
    return Setting("precode", "PRECODE", k, f"K = {k}", float(k))


def _adaptive(knobs: dict) -> AdaptiveForm:
    return AdaptiveForm(solve_noise=True)


DEFENSE = Defense("precode", unchanged, PrecodeKnobs, _setting, ("precode",), _adaptive, extend_model=extend)
