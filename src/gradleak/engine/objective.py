"""The gradient-match objective of DLG, vectorized over K independent attack problems.

Problem k owns dummy images x_k [B, C, H, W], dummy label logits l_k [B, classes] and a
target gradient T_k (one tensor per victim parameter). Its objective is

    D_k = sum over parameters of || grad_theta CE(f_theta(x_k), softmax(l_k)) - T_k ||^2

with the victim's weights theta shared by all problems. torch.func computes the
per-problem parameter gradients and D_k's gradient for all K problems in one pass.
"""
import torch
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap

from gradleak.victim.gradients import soft_cross_entropy


class GradientMatch:
    """D_k and its gradient w.r.t. the dummy images (and label logits) for many problems."""

    def __init__(self, model: nn.Module, optimize_labels: bool = True, compile: bool = False):
        self.model = model
        self.names = [n for n, _ in model.named_parameters()]
        self.params = {n: p.detach() for n, p in model.named_parameters()}
        self.optimize_labels = optimize_labels
        argnums = (0, 1) if optimize_labels else 0
        self._eager = vmap(grad_and_value(self._match, argnums=argnums))
        # inductor fuses the per-problem elementwise work around the convolutions
        self._compiled = torch.compile(self._eager, dynamic=False) if compile else None

    def _param_grads(self, images, soft_labels) -> dict[str, torch.Tensor]:
        def loss_of(params):
            return soft_cross_entropy(functional_call(self.model, params, (images,)), soft_labels)
        return grad(loss_of)(self.params)

    def _match(self, images, label_logits, targets):
        soft = torch.softmax(label_logits, dim=-1) if self.optimize_labels else label_logits
        grads = self._param_grads(images, soft)
        return sum(((grads[n] - t) ** 2).sum() for n, t in zip(self.names, targets))

    def __call__(self, images, labels, targets, compiled: bool = False):
        """images [K,B,C,H,W]; labels: logits [K,B,classes] (soft) or fixed soft labels (iDLG);
        targets: list of [K, *param.shape]. Returns D [K], dD/dimages, dD/dlabels (or None).
        `compiled` runs the torch.compile'd version (built with compile=True)."""
        grads, value = (self._compiled if compiled else self._eager)(images, labels, targets)
        if self.optimize_labels:
            return value, grads[0], grads[1]
        return value, grads, None


def reference_match(model: nn.Module, images, label_logits, targets, optimize_labels=True):
    """The original DLG closure for one problem (autograd, create_graph): the baseline."""
    soft = torch.softmax(label_logits, dim=-1) if optimize_labels else label_logits
    loss = soft_cross_entropy(model(images), soft)
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    return sum(((g - t) ** 2).sum() for g, t in zip(grads, targets))

