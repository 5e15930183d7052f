"""A client's update, the one definition the training's clients and the attacker share: the
per-sample gradient (DP-SGD clips it) and FedAvg's unroll of E local SGD steps, both with
the loss DLG's victim trains on. Under FedAvg (local_steps = E > 1) a client sends
(theta_0 - theta_E) / (local_lr * E); `client_update` computes it differentiably, so the
attacker's objective unrolls exactly what the clients ran."""
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, grad_and_value, vmap


def soft_cross_entropy(logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
    """DLG's loss: mean over the batch of sum(-soft_label * log_softmax(logits))."""
    return torch.mean(torch.sum(-soft_labels * F.log_softmax(logits, dim=-1), dim=-1))


def noise_size(model: nn.Module) -> int:
    """Per image, the noise the model's forward draws (PRECODE's latent features; 0: none)."""
    return getattr(model, "noise_size", 0)


def draw_noise(model: nn.Module, lead: tuple, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor | None:
    """A client's draw of the model's noise for its images [*lead] (PRECODE's eps: [*lead, K]) from
    its own generator; None for a model without noise, which draws nothing."""
    k = noise_size(model)
    return torch.randn((*lead, k), generator=generator, device=generator.device, dtype=dtype) if k else None


def model_outputs(model: nn.Module, params: dict, buffers: dict, images: torch.Tensor,
                  noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | float]:
    """The logits at `params` and what a model-side defense adds to the client's loss: with the
    client's `noise` [n, K], PRECODE's output at that draw and its KL penalty; else 0."""
    if noise is None:
        return functional_call(model, (params, buffers), (images,)), 0.0
    return functional_call(model, (params, buffers), (images, noise))


def model_loss(model: nn.Module, params: dict, buffers: dict, images: torch.Tensor,
               soft_labels: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """The client's loss at `params`: DLG's cross-entropy plus a model-side defense's penalty."""
    logits, penalty = model_outputs(model, params, buffers, images, noise)
    return soft_cross_entropy(logits, soft_labels) + penalty


def client_update(model: nn.Module, params: dict, images: torch.Tensor, soft_labels: torch.Tensor,
                  local_steps: int = 1, local_lr: float = 0.0, buffers: dict | None = None,
                  noise: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One client's update from weights `params` on its batch, and its loss at those weights
    (torch.func: vmap- and grad-able): the gradient, or after E > 1 local steps the mean
    local gradient. `buffers` are the client's own BatchNorm statistics (updated in place);
    `noise` its draw of the model's noise (model_loss)."""
    def loss_of(p, b):  # b an input, not a capture: torch.func lets BatchNorm update inputs
        return model_loss(model, p, b, images, soft_labels, noise)

    buffers = buffers or {}
    step, loss = grad_and_value(loss_of)(params, buffers)
    if local_steps == 1:
        return step, loss
    local = params
    for i in range(local_steps):
        if i:
            step = grad(loss_of)(local, buffers)
        local = {n: local[n] - local_lr * step[n] for n in local}
    return {n: (params[n] - local[n]) / (local_lr * local_steps) for n in params}, loss


def one_hot(labels: torch.Tensor, model: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    return F.one_hot(labels, last_linear_weight(model).shape[0]).to(dtype)


def soft_labels(labels: torch.Tensor, model: nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """Class indices one-hot; soft labels (an encoding defense's mixed ones) as they are."""
    return labels.to(dtype) if labels.is_floating_point() else one_hot(labels, model, dtype)


def shared_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     local_steps: int = 1, local_lr: float = 0.0,
                     noise: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Each target's true update: images [T, B, C, H, W], labels [T, B] (or soft [T, B, classes])
    -> [T, *param] (the gradient; FedAvg's update with local_steps > 1); `noise` [T, B, K]: each
    client's draw of the model's noise (PRECODE)."""
    params = {n: p.detach() for n, p in model.named_parameters()}

    def one(x, y, *e):
        return client_update(model, params, x, soft_labels(y, model, x.dtype), local_steps, local_lr,
                             noise=e[0] if e else None)[0]

    grads = vmap(one)(images, labels, *([] if noise is None else [noise]))
    return [grads[n] for n in params]


def per_sample_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                         noise: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each image's own gradient and loss, in one vmap over every image: images [*lead, C, H, W],
    labels [*lead] (or soft [*lead, classes]), noise [*lead, K] (PRECODE's draws) -> ([*lead, *param]
    per parameter, losses [*lead]); the mean over a batch dimension is that batch's gradient."""
    lead = labels.shape[:-1] if labels.is_floating_point() else labels.shape
    params = {n: p.detach() for n, p in model.named_parameters()}

    def one(x, y, *e):
        return client_update(model, params, x[None], soft_labels(y, model, x.dtype)[None],
                             noise=e[0][None] if e else None)

    flat = images.reshape(-1, *images.shape[len(lead):])
    noise = [] if noise is None else [noise.reshape(-1, noise.shape[-1])]
    grads, losses = vmap(one)(flat, labels.reshape(-1, *labels.shape[len(lead):]), *noise)
    return [grads[n].reshape(*lead, *grads[n].shape[1:]) for n in params], losses.reshape(lead).detach()


def last_linear_weight(model: nn.Module) -> torch.Tensor:
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight
