"""The original DLG attack loop: one image at a time, torch.optim.LBFGS(lr=1), as published.

It is the baseline that scripts/bench.py and the equivalence tests measure our batched
engine against; nothing in the pipeline runs it (`attack=reference` runs the batched
engine with the published settings).
"""
import torch
from torch import nn

from gradleak.engine.objective import reference_match


class ReferenceDLG:
    """One image's attack; `step()` is one LBFGS.step() (the loss at its start), `evals`
    counts closure calls, the unit of work of an attack."""

    def __init__(self, model: nn.Module, target: list[torch.Tensor], images0: torch.Tensor,
                 logits0: torch.Tensor, optimize_labels: bool = True, history_size: int = 100):
        self.model, self.target, self.optimize_labels = model, target, optimize_labels
        self.images = images0.clone().requires_grad_(True)
        self.logits = logits0.clone().requires_grad_(optimize_labels)
        self.variables = [self.images, self.logits] if optimize_labels else [self.images]
        self.opt = torch.optim.LBFGS(self.variables, lr=1, history_size=history_size, max_iter=20)
        self.evals = 0

    def _closure(self):
        self.evals += 1
        self.opt.zero_grad()
        loss = reference_match(self.model, self.images, self.logits, self.target, self.optimize_labels)
        loss.backward(inputs=self.variables)
        return loss

    def step(self) -> float:
        params = list(self.model.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)  # create_graph needs the weights in the graph
        try:
            return float(self.opt.step(self._closure).detach())
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)


def reference_dlg(model, target, images0, logits0, steps: int, optimize_labels: bool = True,
                  history_size: int = 100):
    """Run `steps` LBFGS steps; returns (images, logits, losses per step, evals)."""
    attack = ReferenceDLG(model, target, images0, logits0, optimize_labels, history_size)
    losses = [attack.step() for _ in range(steps)]
    return (attack.images.detach(), attack.logits.detach(),
            torch.tensor(losses, dtype=images0.dtype), attack.evals)
