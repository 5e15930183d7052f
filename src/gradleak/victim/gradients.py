"""The shared gradient: what a client sends, computed for many private batches at once,
with the loss DLG's victim trains on. Under FedAvg (local_steps = E > 1) a client sends
(theta_0 - theta_E) / (local_lr * E) after E local SGD steps (victim/clients.py), which
`client_update` computes differentiably, as the attacker's objective unrolls it."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """DLG's loss: mean over the batch of sum(-soft_label * log_softmax(logits))."""
    return torch.mean(torch.sum(-soft_labels * F.log_softmax(logits, dim=-1), dim=-1))


def client_update(model: nn.Module, params: dict, images: torch.Tensor, soft_labels: torch.Tensor,
                  local_steps: int = 1, local_lr: float = 0.0) -> dict[str, torch.Tensor]:
    """One client's update from weights `params` on its batch (torch.func: vmap- and
    grad-able): the gradient, or after E > 1 local steps the mean local gradient."""
    def loss_of(p):
        return soft_cross_entropy(functional_call(model, p, (images,)), soft_labels)

    if local_steps == 1:
        return grad(loss_of)(params)
    local = params
    for _ in range(local_steps):
        step = grad(loss_of)(local)
        local = {n: local[n] - local_lr * step[n] for n in local}
    return {n: (params[n] - local[n]) / (local_lr * local_steps) for n in params}


def shared_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     local_steps: int = 1, local_lr: float = 0.0) -> list[torch.Tensor]:
    """Each target's true update: images [T, B, C, H, W], labels [T, B] -> [T, *param]
    (the gradient; FedAvg's update with local_steps > 1)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    num_classes = last_linear_weight(model).shape[0]

    def one(x, y):
        return client_update(model, params, x, F.one_hot(y, num_classes).to(x.dtype), local_steps, local_lr)

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
