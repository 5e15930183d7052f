"""What a defense registers: its transform, its knobs' schema, and how a setting is named.

A defense transforms a list of gradient tensors into a new list. Leading `batch_dims`
dimensions index independent gradients (attack problems, training clients): per-tensor
rules such as pruning ratios and int8 scales apply to each of them separately. The same
function defends the update the attacker sees and the update training applies.
"""
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Grads = Sequence[torch.Tensor]


@dataclass(frozen=True)
class Setting:
    """How one defense setting is named in summaries, tables and figures."""
    family: str            # e.g. noise-gaussian: one panel / colour per family
    family_title: str      # e.g. Gaussian noise
    strength: object       # the knob's value (None when undefended)
    strength_label: str    # legend text
    strength_rank: float   # sort key, mild to strong
    variance: float = math.nan  # the added noise's variance, where there is noise


@dataclass(frozen=True)
class Defense:
    name: str                                   # defense=<name>, conf/defense/<name>.yaml
    apply: Callable[..., list[torch.Tensor]]    # (grads, *, generator, batch_dims, **knobs)
    schema: type                                # the knobs' types and ranges (values: the YAML)
    setting: Callable[[dict], Setting]          # knobs -> how the setting is named
    families: tuple[str, ...]                   # its families, in display order
