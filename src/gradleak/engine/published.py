"""The published attack loops, one image at a time: DLG (torch.optim.LBFGS(lr=1)) and
Inverting Gradients (torch.optim.Adam on the gradient's sign, MultiStepLR, boxed images).

They are the baselines that scripts/bench.py and the equivalence tests measure our batched
engine against; nothing in the pipeline runs them (`attack=reference` and `attack=ig` run
the batched engine with the published settings).
"""
import torch
from torch import nn

from gradleak.engine.objective import reference_match
from gradleak.engine.optimizers import ig_milestones
from gradleak.victim.gradients import soft_cross_entropy


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


def reference_ig_cost(model: nn.Module, images, soft_labels, targets, tv: float):
    """Inverting Gradients' closure for one problem, as its code writes it (autograd,
    create_graph): 1 - the cosine of the concatenated gradients, plus tv x its total variation."""
    loss = soft_cross_entropy(model(images), soft_labels)
    grads = torch.autograd.grad(loss, list(model.parameters()), create_graph=True)
    dot, g_norm2, t_norm2 = 0, 0, 0
    for g, t in zip(grads, targets):
        dot = dot + (g * t).sum()
        g_norm2 = g_norm2 + g.pow(2).sum()
        t_norm2 = t_norm2 + t.pow(2).sum()
    cost = 1 - dot / g_norm2.sqrt() / t_norm2.sqrt()
    dx = torch.mean(torch.abs(images[:, :, :, :-1] - images[:, :, :, 1:]))
    dy = torch.mean(torch.abs(images[:, :, :-1, :] - images[:, :, 1:, :]))
    return cost + tv * (dx + dy) if tv > 0 else cost


class ReferenceIG:
    """One image's Inverting Gradients attack with fixed (one-hot) labels; `step()` is one
    Adam update on sign(gradient) plus the scheduler step and the [0, 1] projection, as in
    its `_run_trial` (the loss before the update); `evals` counts closure calls."""

    def __init__(self, model: nn.Module, target: list[torch.Tensor], images0: torch.Tensor,
                 soft_labels: torch.Tensor, iterations: int, lr: float = 0.1, tv: float = 1e-4):
        self.model, self.target, self.labels, self.tv = model, target, soft_labels, tv
        self.images = images0.clone().requires_grad_(True)
        self.opt = torch.optim.Adam([self.images], lr=lr)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.opt, milestones=ig_milestones(iterations),
                                                              gamma=0.1)
        self.evals = 0

    def _closure(self):
        self.evals += 1
        self.opt.zero_grad()
        loss = reference_ig_cost(self.model, self.images, self.labels, self.target, self.tv)
        loss.backward(inputs=[self.images])
        self.images.grad.sign_()
        return loss

    def step(self) -> float:
        params = list(self.model.parameters())
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        try:
            loss = float(self.opt.step(self._closure).detach())
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
        self.scheduler.step()
        with torch.no_grad():
            self.images.clamp_(0, 1)
        return loss
