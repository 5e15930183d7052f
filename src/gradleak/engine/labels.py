"""Label rules: what the attacker infers about the private labels from the shared gradient."""
import torch
from torch import nn

from gradleak.victim.gradients import last_linear_weight


def idlg_labels(model: nn.Module, targets: list[torch.Tensor]) -> torch.Tensor:
    """iDLG: the true class is the row of the last layer's weight gradient with the smallest
    sum (the only negative row for one image with non-negative features)."""
    weight = last_linear_weight(model)
    index = next(i for i, p in enumerate(model.parameters()) if p is weight)
    return targets[index].sum(dim=-1).argmin(dim=-1)  # [T]
