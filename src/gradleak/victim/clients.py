"""Simulated data-parallel clients (workers): each computes the gradient of its own shard, defends
it with the same code the attacker's gradient goes through, and the server averages.

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
from torch.func import functional_call, grad_and_value, vmap


def split_among_workers(images: torch.Tensor, labels: torch.Tensor, workers: int):
    """[B, ...] -> [W, B / W, ...]: worker w gets the w-th contiguous shard."""
    if len(labels) % workers:
        raise ValueError(f"a global batch of {len(labels)} does not split among {workers} workers")
    return images.reshape(workers, -1, *images.shape[1:]), labels.reshape(workers, -1)


def worker_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                     vectorize: bool = True, per_sample: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Gradients of each worker's mean cross-entropy: ([W, *p.shape] per parameter, losses [W]).

    vectorize=True computes all workers in one torch.func.vmap pass; False loops over them
    (faster on CPUs, where vmap's grouped convolutions are slower: see scripts/bench_training.py).
    per_sample=True returns each sample's gradient instead, [W, b, *p.shape] (DP-SGD clips them).
    """
    if per_sample:
        return per_sample_gradients(model, images, labels)
    workers = images.shape[0]
    buffers = {n: b.expand(workers, *b.shape).clone() for n, b in model.named_buffers()}
    if vectorize:
        grads, losses = _vectorized(model, buffers, images, labels)
    else:
        grads, losses = _looped(model, buffers, images, labels)
    _keep_mean_statistics(model, buffers)
    return grads, losses


def _loss(model, params, buffers, images, labels):
    return F.cross_entropy(functional_call(model, (params, buffers), (images,)), labels)


def _vectorized(model, buffers, images, labels):
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss(p, b, x, y):
        return _loss(model, p, b, x, y)

    grads, losses = vmap(grad_and_value(loss), in_dims=(None, 0, 0, 0))(params, buffers, images, labels)
    return list(grads.values()), losses.detach()


def _looped(model, buffers, images, labels):
    params = dict(model.named_parameters())
    grads, losses = [], []
    for w in range(images.shape[0]):
        # Views into the stacked buffers: BatchNorm's in-place updates land in worker w's copy.
        loss = _loss(model, params, {n: b[w] for n, b in buffers.items()}, images[w], labels[w])
        grads.append(torch.autograd.grad(loss, list(params.values())))
        losses.append(loss.detach())
    return [torch.stack(g) for g in zip(*grads)], torch.stack(losses)


def per_sample_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor):
    """([W, b, *p.shape] per parameter, mean losses [W]) in one vmap over the W x b samples."""
    if any(True for _ in model.buffers()):
        raise ValueError("per-sample gradients need a model without buffers: BatchNorm mixes the "
                         "samples of a batch (use model=lenet with defense=dpsgd)")
    params = {n: p.detach() for n, p in model.named_parameters()}
    workers, per_worker = labels.shape

    def loss(p, x, y):
        return F.cross_entropy(functional_call(model, p, (x[None],)), y[None])

    grads, losses = vmap(grad_and_value(loss), in_dims=(None, 0, 0))(params, images.flatten(0, 1), labels.flatten())
    return ([g.reshape(workers, per_worker, *g.shape[1:]) for g in grads.values()],
            losses.reshape(workers, per_worker).mean(1).detach())


def _keep_mean_statistics(model: nn.Module, worker_buffers: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, buf in model.named_buffers():
            stacked = worker_buffers[name]
            buf.copy_(stacked.float().mean(0) if buf.is_floating_point() else stacked[0])


def worker_seed(seed: int, step: int, worker: int) -> int:
    """Independent, reproducible noise stream per (run seed, step, worker)."""
    return int(np.random.SeedSequence([seed, step, worker]).generate_state(1, np.uint64)[0] >> 1)


def server_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                    defense: Callable, *, step: int, seed: int,
                    vectorize: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The gradient the optimizer applies: the mean over workers of each worker's defended
    gradient. Returns (one tensor per parameter, mean worker loss)."""
    grads, losses = worker_gradients(model, images, labels, vectorize, getattr(defense, "per_sample", False))
    device = images.device
    defended = []
    for w in range(images.shape[0]):
        # Each worker calls the defense exactly as the attacker's gradient is defended
        # (one gradient, batch_dims=0; per-sample ones [b, *p]), with its own seeded generator.
        generator = torch.Generator(device=device).manual_seed(worker_seed(seed, step, w))
        defended.append(defense([g[w] for g in grads], generator=generator, batch_dims=0))
    return [torch.stack(gs).mean(0) for gs in zip(*defended)], losses.mean()
