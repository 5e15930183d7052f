"""Reconstructions kept along an attack whose length is known only at its end (stop rules and
convergence end most attacks long before attack.steps): at most 2n evenly spaced frames are
kept while it runs (the stride doubles when they fill up); the snapshots are the kept frames
nearest to n steps evenly spaced over the steps the attack took, first and last included."""
import numpy as np
import torch


class Snapshots:
    def __init__(self, n: int):
        self.n, self.stride = n, 1
        self.kept: dict[int, torch.Tensor] = {}
        self.last: tuple[int, torch.Tensor] | None = None

    def offer(self, step: int, recon: torch.Tensor) -> None:
        """The reconstruction after `step` steps (the latest is kept for the end)."""
        if not self.n:
            return
        self.last = step, recon  # copied off the device only if it ends the run
        if step % self.stride:
            return
        self.kept[step] = _frame(recon)
        if len(self.kept) > 2 * self.n:
            self.stride *= 2
            self.kept = {s: f for s, f in self.kept.items() if s % self.stride == 0}

    def chosen(self) -> tuple[list[int], list[torch.Tensor]]:
        """Per step of n evenly spaced over [0, last step], the kept frame nearest to it."""
        if self.last is None:
            return [], []
        kept = {**self.kept, self.last[0]: _frame(self.last[1])}
        steps = np.array(sorted(kept))
        wanted = np.linspace(0, steps[-1], self.n)
        picks = dict.fromkeys(int(steps[np.abs(steps - t).argmin()]) for t in wanted)  # ties: the earlier
        return list(picks), [kept[s] for s in picks]


def _frame(recon: torch.Tensor) -> torch.Tensor:
    return recon.clamp(0, 1).cpu()
