"""Gradient defenses, one module each, registered here: the one place that lists them.

A new defense is one module (its transform, knob schema, setting names and adaptive form,
as a `base.Defense`) added to REGISTERED, plus `conf/defense/<name>.yaml` with its knobs.
"""
import torch

from . import dpsgd, mixup, noise, none, precision, precode, prune, soteria
from .base import AdaptiveForm, Defense, Grads, Setting

REGISTERED: tuple[Defense, ...] = (none.DEFENSE, noise.DEFENSE, precision.DEFENSE, prune.DEFENSE, dpsgd.DEFENSE,
                                   soteria.DEFENSE, mixup.MIXUP, mixup.INSTAHIDE, precode.DEFENSE)
DEFENSES: dict[str, Defense] = {d.name: d for d in REGISTERED}
FAMILY_ORDER: tuple[str, ...] = tuple(f for d in REGISTERED for f in d.families)
# Top-level command-line knobs (defense=noise scale=1e-3): every defense's schema fields.
KNOBS: tuple[str, ...] = tuple(dict.fromkeys(
    k for d in REGISTERED for k in d.schema.__dataclass_fields__ if k != "name"))


def knobs_of(defense_cfg) -> dict:
    return {k: v for k, v in dict(defense_cfg).items() if k != "name"}


class ConfiguredDefense:
    """grads -> defended grads for one setting; `adaptive` is how the setting is attacked
    by an attacker who knows it (None: it has no adaptive form); `per_sample`: it takes
    per-sample gradients, `needs_data`: the images and model too, `encodes`: it encodes the
    client's images before the gradient (base.Defense)."""

    def __init__(self, defense: Defense, knobs: dict):
        self.name, self._fn, self._knobs = defense.name, defense.apply, knobs
        self.per_sample, self.needs_data = defense.per_sample, defense.needs_data
        self._encode, self._extend = defense.encode, defense.extend_model
        self.adaptive: AdaptiveForm | None = defense.adaptive(knobs)

    @property
    def encodes(self) -> bool:
        return self._encode is not None

    def encode(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator):
        """The client's images [N, C, H, W] and labels [N] encoded (base.Defense.encode)."""
        return self._encode(images, labels, num_classes, generator=generator, **self._knobs)

    def victim(self, model):
        """The victim model with a model-side defense built in (PRECODE); else the model itself."""
        return model if self._extend is None else self._extend(model, **self._knobs)

    def __call__(self, grads: Grads, generator=None, batch_dims: int = 0, data=None) -> list[torch.Tensor]:
        """data: (model, images [*batch, b, C, H, W]) the gradients came from; a defense that
        needs them (needs_data) raises without them, the others ignore them."""
        if not self.needs_data:
            return self._fn(grads, generator=generator, batch_dims=batch_dims, **self._knobs)
        if data is None:
            raise ValueError(f"defense={self.name} needs the images and model its gradients came from")
        return self._fn(grads, generator=generator, batch_dims=batch_dims, data=data, **self._knobs)


def defense_from_config(defense_cfg) -> ConfiguredDefense:
    """The defense of a `defense` config node (name + knobs)."""
    return ConfiguredDefense(DEFENSES[defense_cfg["name"]], knobs_of(defense_cfg))


def setting_of(defense_cfg) -> dict:
    """How the config's defense setting is named, with its family's display rank."""
    s = DEFENSES[defense_cfg["name"]].setting(knobs_of(defense_cfg))
    return {**s.__dict__, "family_rank": FAMILY_ORDER.index(s.family)}


__all__ = ["DEFENSES", "FAMILY_ORDER", "KNOBS", "AdaptiveForm", "ConfiguredDefense", "Defense", "Setting",
           "defense_from_config", "setting_of"]
