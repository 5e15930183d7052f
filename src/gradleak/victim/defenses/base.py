"""What a defense registers: its transform, its knobs' schema, and how a setting is named.

A defense transforms a list of gradient tensors into a new list. Leading `batch_dims`
dimensions index independent gradients (attack problems, training clients): per-tensor
rules such as pruning ratios and int8 scales apply to each of them separately. A
`per_sample` defense gets each gradient's per-sample gradients instead (one more dimension,
after the batch dimensions) and returns one gradient per batch index. The same
function defends the update the attacker sees and the update training applies.

Each defense also says how an attacker who knows it attacks through it (`attack.adaptive`):
an `AdaptiveForm`, or None when it has no adaptive form.
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
class AdaptiveForm:
    """How the attack's gradient match changes when the attacker knows the defense.

    `transform(dummy, defended)` maps one problem's dummy gradient (a list of tensors, one
    per parameter, no batch dimension: it runs under vmap) to what is compared with the
    defended gradient; it must be differentiable (a straight-through estimator where the
    defense rounds). `match` replaces the attacker's gradient match (the noise's likelihood).
    """
    match: str | None = None
    transform: Callable[[Grads, Grads], list[torch.Tensor]] | None = None
    # decode(reconstructions [N, C, H, W], encoding): an encoding defense's private images
    # from the recovered encodings (MixUp, InstaHide), knowing how the client encoded
    decode: Callable | None = None
    # True: the attacker solves for the client's draw of a model-side defense's noise (PRECODE's
    # eps) jointly with the images; False: it runs the model at that noise's mean
    solve_noise: bool = False


@dataclass(frozen=True)
class Defense:
    name: str                                   # defense=<name>, conf/defense/<name>.yaml
    apply: Callable[..., list[torch.Tensor]]    # (grads, *, generator, batch_dims, **knobs)
    schema: type                                # the knobs' types and ranges (values: the YAML)
    setting: Callable[[dict], Setting]          # knobs -> how the setting is named
    families: tuple[str, ...]                   # its families, in display order
    adaptive: Callable[[dict], AdaptiveForm | None]  # knobs -> how it is attacked adaptively
    # True: `apply` takes per-sample gradients, [*batch, n, *param] with the n samples at
    # dimension batch_dims, and returns [*batch, *param] (DP-SGD's per-sample clipping)
    per_sample: bool = False
    # True: `apply` also takes data=(model, images [*batch, b, C, H, W]), each gradient's own
    # images and the model they went through (Soteria scores the representation's features)
    needs_data: bool = False
    # An encoding defense (MixUp, InstaHide): encode(images [N, C, H, W], labels [N],
    # num_classes, *, generator, **knobs) -> mixup.Encoding, applied to the client's images
    # before its gradient is computed; `apply` then gets the encodings' gradient
    encode: Callable | None = None
    # A model-side defense (PRECODE): extend_model(model, **knobs) -> the victim model with the
    # defense built in; the client's loss then takes the model's noise (victim/gradients.py)
    extend_model: Callable | None = None
