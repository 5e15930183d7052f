"""The shared gradient: what a client sends, computed for many private batches at once,
with the loss DLG's victim trains on."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """DLG's loss: mean over the batch of sum(-soft_label * log_softmax(logits))."""
    return torch.mean(torch.sum(-soft_labels * F.log_softmax(logits, dim=-1), dim=-1))


def shared_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """Each target's true gradient: images [T, B, C, H, W], labels [T, B] -> [T, *param]."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    num_classes = last_linear_weight(model).shape[0]

    def one(x, y):
        soft = F.one_hot(y, num_classes).to(x.dtype)
        return grad(lambda p: soft_cross_entropy(functional_call(model, p, (x,)), soft))(params)

    grads = vmap(one)(images, labels)
    return [grads[n] for n in params]


def per_sample_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """Each image's own gradient: images [T, B, C, H, W], labels [T, B] -> [T, B, *param]
    (their mean over B is the shared gradient)."""
    t, b = labels.shape
    grads = shared_gradients(model, images.reshape(t * b, 1, *images.shape[2:]), labels.reshape(t * b, 1))
    return [g.reshape(t, b, *g.shape[1:]) for g in grads]


def last_linear_weight(model: nn.Module) -> torch.Tensor:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight
