"""Attack problems as flat variables: each row of x [K, n] holds one problem's dummy images
(then dummy label logits, then its guess of the client's model noise: PRECODE's eps, when the
attacker solves for it); the objective evaluates the rows still running."""
from dataclasses import dataclass

import numpy as np
import torch

from gradleak.engine.objective import GradientMatch


@dataclass
class DummyLayout:
    batch: int
    image_shape: tuple[int, int, int]
    num_classes: int
    with_labels: bool
    noise_size: int = 0         # the model's noise per image (PRECODE's K; 0: none)
    solve_noise: bool = False   # the client's draw is a variable (else the attack runs the noise's mean)

    @property
    def image_numel(self) -> int:
        return self.batch * int(np.prod(self.image_shape))

    @property
    def label_numel(self) -> int:
        return self.batch * self.num_classes if self.with_labels else 0

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.image_numel].reshape(-1, self.batch, *self.image_shape)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.image_numel:self.image_numel + self.label_numel].reshape(-1, self.batch, self.num_classes)

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.image_numel + self.label_numel:].reshape(-1, self.batch, self.noise_size)

    def flat(self, images: torch.Tensor, labels: torch.Tensor | None, noise: torch.Tensor | None = None):
        parts = [images.flatten(1)] + [p.flatten(1) for p in (labels, noise) if p is not None]
        return torch.cat(parts, dim=1)


class ProblemObjective:
    """f(x_rows, rows) -> (D [k], dD/dx [k, n]) for the optimizers, chunked to bound memory.

    With `compile`, an evaluation of at least 2/3 of a chunk runs compiled at the chunk's
    size, so the compiled objective sees one shape (one compilation): the missing rows are
    zeros (one chunk: then the targets need no gather) or copies of the last row. Smaller
    evaluations (a line search's retries, the last few running problems) run eagerly,
    where padding would cost more than compiling saves.
    """

    def __init__(self, model, layout: DummyLayout, targets, fixed_labels, chunk_size: int = 0,
                 compile: bool = False, match: str = "l2", tv: float = 0.0, transform=None,
                 local_steps: int = 1, local_lr: float = 0.0):
        self.match = GradientMatch(model, optimize_labels=layout.with_labels, compile=compile,
                                   match=match, tv=tv, transform=transform, local_steps=local_steps,
                                   local_lr=local_lr, solve_noise=layout.solve_noise)
        self.layout, self.targets, self.fixed_labels = layout, targets, fixed_labels
        self.chunk_size = chunk_size or len(targets[0])
        self.compile = compile

    @torch.no_grad()  # one grad mode for every call: a change would recompile
    def __call__(self, x: torch.Tensor, rows: torch.Tensor):
        step = self.chunk_size
        parts = [self._eval(x[i:i + step], rows[i:i + step]) for i in range(0, len(rows), step)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def runs_compiled(self, k: int) -> bool:
        return self.compile and 3 * k >= 2 * self.chunk_size

    def _eval(self, x, rows):
        total, k = len(self.targets[0]), len(rows)
        keep = slice(0, k)
        compiled = self.runs_compiled(k)
        if compiled and k < self.chunk_size:
            if self.chunk_size == total:  # one chunk: the other problems' rows get zeros
                x, keep, rows = _scatter_rows(x, rows, total), rows, None
            else:
                x, rows = _pad_rows(x, self.chunk_size), _pad_rows(rows, self.chunk_size)
        everyone = rows is None or len(rows) == total  # no gather of targets and labels
        targets = self.targets if everyone else [t[rows] for t in self.targets]
        if self.layout.with_labels:
            labels = self.layout.labels(x)
        else:
            labels = self.fixed_labels if everyone else self.fixed_labels[rows]
        noise = self.layout.noise(x) if self.layout.solve_noise else None
        value, d_images, d_labels, d_noise = self.match(self.layout.images(x), labels, targets, compiled, noise)
        return value[keep].detach(), self.layout.flat(d_images, d_labels, d_noise)[keep].detach()


def _pad_rows(a: torch.Tensor, size: int) -> torch.Tensor:
    """a with its last row repeated up to `size` rows (problems are independent, so the
    copies change nothing but the shape)."""
    return a if len(a) == size else torch.cat([a, a[-1:].expand(size - len(a), *a.shape[1:])])


def _scatter_rows(x: torch.Tensor, rows: torch.Tensor, total: int) -> torch.Tensor:
    """x's rows placed at `rows` of a [total, n] batch of zeros."""
    full = x.new_zeros((total, x.shape[1]))
    full[rows] = x
    return full
