"""The gradient-match objective, vectorized over K independent attack problems.

Problem k owns dummy images x_k [B, C, H, W], dummy label logits l_k [B, classes] and a
target gradient T_k (one tensor per victim parameter). With G_k = grad_theta CE(f_theta(x_k),
softmax(l_k)) (optionally transformed: an adaptive attack's view of the defense, A(G_k, T_k)),
its objective is

    D_k = match(G_k, T_k) + tv * TV(x_k)

Against FedAvg (local_steps = E > 1), G_k is the update the client would send from x_k:
E local SGD steps unrolled differentiably (victim.gradients.client_update), as in
Inverting Gradients' attack on multi-step updates.

match "l2" (DLG): sum over parameters of ||G - T||^2; "l1": sum of |G - T|; "cosine"
(Inverting Gradients): 1 - <G, T> / (||G|| ||T||), dot products and norms summed over all
parameters before dividing. TV is Inverting Gradients' anisotropic total variation
(mean |dx| + mean |dy|). The victim's weights theta are shared by all problems; torch.func
computes the per-problem parameter gradients and D_k's gradient for all K in one pass.
"""
import torch
from torch import nn
from torch.func import grad_and_value, vmap

from gradleak.victim.gradients import client_update, noise_size, soft_cross_entropy

MATCHES = ("l2", "l1", "cosine")


def gradient_distance(dummy, targets, match: str) -> torch.Tensor:
    """One problem's distance between its dummy and target gradients (lists of tensors)."""
    if match == "l2":
        return sum(((g - t) ** 2).sum() for g, t in zip(dummy, targets))
    if match == "l1":
        return sum((g - t).abs().sum() for g, t in zip(dummy, targets))
    dot = sum((g * t).sum() for g, t in zip(dummy, targets))
    g_norm2 = sum((g * g).sum() for g in dummy)
    t_norm2 = sum((t * t).sum() for t in targets)
    return 1 - dot / (g_norm2.sqrt() * t_norm2.sqrt())


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """mean |horizontal differences| + mean |vertical differences| of images [..., H, W]."""
    dx = (images[..., :, :-1] - images[..., :, 1:]).abs().mean()
    dy = (images[..., :-1, :] - images[..., 1:, :]).abs().mean()
    return dx + dy


class GradientMatch:
    """D_k and its gradient w.r.t. the dummy images (and label logits) for many problems.

    `transform(dummy, targets)` (per problem, under vmap) is what the dummy gradient becomes
    before the match: an adaptive attack's model of the defense (victim.defenses.AdaptiveForm).
    A model with noise of its own (PRECODE) runs at the noise's mean, or, with `solve_noise`,
    at each problem's guess of the client's draw, a variable like the images.
    """

    def __init__(self, model: nn.Module, optimize_labels: bool = True, compile: bool = False,
                 match: str = "l2", tv: float = 0.0, transform=None, local_steps: int = 1,
                 local_lr: float = 0.0, solve_noise: bool = False):
        if match not in MATCHES:
            raise ValueError(f"match={match!r}: allowed {MATCHES}")
        self.model = model
        self.names = [n for n, _ in model.named_parameters()]
        self.params = {n: p.detach() for n, p in model.named_parameters()}
        self.optimize_labels = optimize_labels
        self.match, self.tv, self.transform = match, tv, transform
        self.local_steps, self.local_lr = local_steps, local_lr
        self.noise_size, self.solve_noise = noise_size(model), solve_noise
        self.argnums = (0,) + (1,) * optimize_labels + (2,) * solve_noise
        self._eager = vmap(grad_and_value(self._match, argnums=self.argnums),
                           in_dims=(0, 0, 0 if solve_noise else None, 0))
        # inductor fuses the per-problem elementwise work around the convolutions
        self._compiled = torch.compile(self._eager, dynamic=False) if compile else None

    def _match(self, images, label_logits, noise, targets):
        soft = torch.softmax(label_logits, dim=-1) if self.optimize_labels else label_logits
        if self.noise_size and noise is None:  # the attacker runs the model at its noise's mean
            noise = images.new_zeros(images.shape[0], self.noise_size)
        grads, _ = client_update(self.model, self.params, images, soft, self.local_steps, self.local_lr,
                                 noise=noise)
        dummy = [grads[n] for n in self.names]
        if self.transform is not None:
            dummy = self.transform(dummy, targets)
        value = gradient_distance(dummy, targets, self.match)
        return value + self.tv * total_variation(images) if self.tv else value

    def __call__(self, images, labels, targets, compiled: bool = False, noise=None):
        """images [K,B,C,H,W]; labels: logits [K,B,classes] (soft) or fixed soft labels (iDLG);
        targets: list of [K, *param.shape]; noise [K,B,noise_size] with solve_noise. Returns D [K],
        dD/dimages, dD/dlabels and dD/dnoise (None where not variables). `compiled` runs the
        torch.compile'd version (built with compile=True)."""
        grads, value = (self._compiled if compiled else self._eager)(images, labels, noise, targets)
        by_arg = dict(zip(self.argnums, grads))
        return value, by_arg[0], by_arg.get(1), by_arg.get(2)


def reference_match(model: nn.Module, images, label_logits, targets, optimize_labels=True):
    """The original DLG closure for one problem (autograd, create_graph): the baseline."""
    soft = torch.softmax(label_logits, dim=-1) if optimize_labels else label_logits
    loss = soft_cross_entropy(model(images), soft)
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    return sum(((g - t) ** 2).sum() for g, t in zip(grads, targets))

