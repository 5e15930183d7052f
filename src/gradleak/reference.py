"""The original DLG attack loop: one image at a time, torch.optim.LBFGS(lr=1), as published.

It is the baseline that scripts/bench.py and the equivalence tests measure our batched
engine against; nothing in the pipeline runs it.
"""
import torch
from torch import nn

from gradleak.objective import reference_match


def reference_dlg(model: nn.Module, target: list[torch.Tensor], images0: torch.Tensor,
                  logits0: torch.Tensor, steps: int, optimize_labels: bool = True):
    """Run `steps` LBFGS steps from (images0, logits0); returns (images, logits, losses, evals).

    losses[i] is what LBFGS.step() returned at step i (the loss at the step's start);
    evals counts closure calls, the unit of work of an attack.
    """
    images = images0.clone().requires_grad_(True)
    logits = logits0.clone().requires_grad_(optimize_labels)
    variables = [images, logits] if optimize_labels else [images]
    opt = torch.optim.LBFGS(variables, lr=1, history_size=100, max_iter=20)
    evals = 0
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)  # create_graph needs the weights in the graph

    def closure():
        nonlocal evals
        evals += 1
        opt.zero_grad()
        loss = reference_match(model, images, logits, target, optimize_labels)
        loss.backward(inputs=variables)
        return loss

    try:
        losses = [float(opt.step(closure).detach()) for _ in range(steps)]
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)
    return images.detach(), logits.detach(), torch.tensor(losses, dtype=images.dtype), evals
