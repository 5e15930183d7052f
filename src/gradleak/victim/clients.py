"""Simulated federated clients (workers): each computes the update of its own shard, defends
it with the same code the attacker's gradient goes through, and the server averages.

FedSGD (local_steps = 1) shares the gradient of the shard. FedAvg (local_steps = E) runs E
local SGD steps of lr `local_lr` on the shard from the server's weights and shares
(theta_0 - theta_E) / (local_lr * E), the mean local gradient, so E = 1 is FedSGD and the
server's optimizer and every defense see an update of a gradient's scale.

Shapes: a global batch is split as images [W, b, C, H, W] and labels [W, b]; per-worker
gradients are one tensor [W, *param.shape] per parameter. BatchNorm statistics are per
worker (as in data parallelism without SyncBN); each worker updates its own copy of the
running statistics and the model keeps their average.
"""
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad_and_value, vmap

from gradleak.victim.gradients import (
    client_update,
    draw_noise,
    last_linear_weight,
    model_outputs,
    noise_size,
    per_sample_gradients,
    soft_labels,
)


def split_among_workers(images: torch.Tensor, labels: torch.Tensor, workers: int):
    """[B, ...] -> [W, B / W, ...]: worker w gets the w-th contiguous shard."""
    if len(labels) % workers:
        raise ValueError(f"a global batch of {len(labels)} does not split among {workers} workers")
    return images.reshape(workers, -1, *images.shape[1:]), labels.reshape(workers, -1)


def worker_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, vectorize: bool = True,
                     per_sample: bool = False,
                     noise: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Gradients of each worker's mean cross-entropy: ([W, *p.shape] per parameter, losses [W]).

    vectorize=True computes all workers in one torch.func.vmap pass; False loops over them
    (faster on CPUs, where vmap's grouped convolutions are slower: see scripts/bench_training.py).
    per_sample=True returns each sample's gradient instead, [W, b, *p.shape] (DP-SGD clips them).
    noise [W, b, K]: each worker's draw of the model's noise (PRECODE).
    """
    if per_sample:
        grads, losses = per_sample_gradients(model, images, labels, noise)
        return grads, losses.mean(1)
    workers = images.shape[0]
    buffers = {n: b.expand(workers, *b.shape).clone() for n, b in model.named_buffers()}
    if vectorize:
        grads, losses = _vectorized(model, buffers, images, labels, noise)
    else:
        grads, losses = _looped(model, buffers, images, labels, noise)
    _keep_mean_statistics(model, buffers)
    return grads, losses


def _loss(model, params, buffers, images, labels, noise=None):
    logits, penalty = model_outputs(model, params, buffers, images, noise)
    return F.cross_entropy(logits, labels) + penalty


def _vectorized(model, buffers, images, labels, noise=None):
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, b, x, y, *e):
        return _loss(model, p, b, x, y, *e)

    extra = () if noise is None else (noise,)
    grads, losses = vmap(grad_and_value(loss), in_dims=(None, 0, 0, 0, *[0] * len(extra)))(
        params, buffers, images, labels, *extra)
    return list(grads.values()), losses.detach()


def _looped(model, buffers, images, labels, noise=None):
    params = dict(model.named_parameters())
    grads, losses = [], []
    for w in range(images.shape[0]):
        # Views into the stacked buffers: BatchNorm's in-place updates land in worker w's copy.
        loss = _loss(model, params, {n: b[w] for n, b in buffers.items()}, images[w], labels[w],
                     None if noise is None else noise[w])
        grads.append(torch.autograd.grad(loss, list(params.values())))
        losses.append(loss.detach())
    return [torch.stack(g) for g in zip(*grads)], torch.stack(losses)


def _keep_mean_statistics(model: nn.Module, worker_buffers: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, buf in model.named_buffers():
            stacked = worker_buffers[name]
            buf.copy_(stacked.float().mean(0) if buf.is_floating_point() else stacked[0])


def worker_seed(seed: int, step: int, worker: int) -> int:
    """Independent, reproducible noise stream per (run seed, step, worker)."""
    return int(np.random.SeedSequence([seed, step, worker]).generate_state(1, np.uint64)[0] >> 1)


def local_updates(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, local_steps: int,
                  local_lr: float) -> tuple[list[torch.Tensor], torch.Tensor]:
    """FedAvg's shared updates, (theta_0 - theta_E) / (local_lr * E) per worker after E local
    SGD steps on its shard (the attacker's unroll, victim/gradients.py): ([W, *p.shape] per
    parameter, each worker's first-step loss [W])."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.expand(images.shape[0], *b.shape).clone() for n, b in model.named_buffers()}
    updates, losses = [], []
    for w in range(images.shape[0]):
        update, loss = client_update(model, params, images[w], soft_labels(labels[w], model, images.dtype),
                                     local_steps, local_lr, {n: b[w] for n, b in buffers.items()})
        updates.append([update[n] for n in params])
        losses.append(loss.detach())
    _keep_mean_statistics(model, buffers)
    return [torch.stack(u) for u in zip(*updates)], torch.stack(losses)


def client_updates(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, defense: Callable, *,
                   step: int, seed: int, vectorize: bool = True, local_steps: int = 1,
                   local_lr: float = 0.0) -> tuple[list[list[torch.Tensor]], torch.Tensor]:
    """What each worker shares at training step `step`: its defended update (a list of
    tensors per worker: W lists) and the workers' losses [W]."""
    generators = [torch.Generator(device=images.device).manual_seed(worker_seed(seed, step, w))
                  for w in range(images.shape[0])]
    if getattr(defense, "encodes", False):  # MixUp, InstaHide: each worker encodes its own shard
        images, labels = encode_shards(defense, model, images, labels, generators)
    noise = model_noise(model, images.shape[1], generators)
    if local_steps == 1:
        grads, losses = worker_gradients(model, images, labels, vectorize, getattr(defense, "per_sample", False),
                                         noise)
    else:
        grads, losses = local_updates(model, images, labels, local_steps, local_lr)
    defended = []
    for w in range(images.shape[0]):
        # Each worker calls the defense exactly as the attacker's gradient is defended
        # (one gradient, batch_dims=0; per-sample ones [b, *p]), with its own seeded generator.
        data = {"data": (model, images[w])} if getattr(defense, "needs_data", False) else {}
        defended.append(defense([g[w] for g in grads], generator=generators[w], batch_dims=0, **data))
    return defended, losses


def model_noise(model: nn.Module, images_per_worker: int,
                generators: list[torch.Generator]) -> torch.Tensor | None:
    """Each worker's draw of the model's noise for its images, [W, b, K] (PRECODE's eps), from its
    own generator; None for a model without noise."""
    if not noise_size(model):
        return None
    dtype = next(model.parameters()).dtype
    return torch.stack([draw_noise(model, (images_per_worker,), g, dtype) for g in generators])


def encode_shards(defense, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """Each worker's shard [W, b, ...] encoded from its own pool: (images, soft labels [W, b, classes])."""
    classes = last_linear_weight(model).shape[0]
    encodings = [defense.encode(x, y, classes, g) for x, y, g in zip(images, labels, generators)]
    return torch.stack([e.images for e in encodings]), torch.stack([e.soft_labels for e in encodings])


def server_mean(defended: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    return [torch.stack(gs).mean(0) for gs in zip(*defended)]
