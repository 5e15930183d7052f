"""Secure aggregation (Bonawitz et al., CCS 2017) as a threat model: the server learns only
the mean of N clients' updates, never one client's own.

With `aggregation=secure attack.batch_size=N`, each image of an attacked batch is the private
data of a client of its own: the client computes its image's gradient and defends it (its
own noise draw, its own clipping, pruning or rounding), and the attacker gets the mean of the
N defended gradients. Undefended, that mean is the batch's mean gradient, so secure
aggregation alone is the batch stage's attack at B = N (a test holds them equal). With a
defense the order matters: noise of variance s^2 per client reaches the server as s^2 / N,
and pruning and rounding act on each client's gradient, not on the mean.

Training is unchanged by it: the server applies the mean of its workers' defended updates
either way, so a job's accuracy is its defense's (victim/training.py).
"""
import torch

from gradleak.victim.defenses import FAMILY_ORDER, ConfiguredDefense, Grads, defense_from_config, setting_of


class SecureAggregation:
    """The mean of per-client defended gradients. Called as the engine calls a per-sample
    defense: per-image gradients [*batch, N, *param], clients at dimension `batch_dims`."""
    per_sample = True  # the engine hands over each image's gradient
    adaptive = None    # an attacker through per-client defenses needs each dummy image's gradient: not built

    def __init__(self, defense: ConfiguredDefense):
        self.defense = defense
        self.name, self.needs_data = defense.name, defense.needs_data

    def __call__(self, grads: Grads, generator=None, batch_dims: int = 0, data=None) -> list[torch.Tensor]:
        clients = batch_dims  # one more batch dimension: every client defends its own gradient
        if self.defense.per_sample:  # DP-SGD: a client's one image is its batch
            grads = [g.unsqueeze(clients + 1) for g in grads]
        if data is not None:  # each client's images: its one image
            data = (data[0], data[1].unsqueeze(clients + 1))
        defended = self.defense(grads, generator=generator, batch_dims=batch_dims + 1, data=data)
        return [d.mean(clients) for d in defended]


def attacked_defense(cfg):
    """What the job's attacked update goes through: cfg.defense, per client under aggregation=secure."""
    defense = defense_from_config(cfg.defense)
    return SecureAggregation(defense) if secure(cfg) else defense


def secure(cfg) -> bool:
    aggregation = cfg.get("aggregation")
    return aggregation is not None and aggregation.name == "secure"


def attacked_setting(cfg) -> dict:
    """How tables and figures name the job's setting: its defense's (victim.defenses.setting_of),
    or under secure aggregation the mean of N clients' updates under that defense, a family of
    its own whose strength is N (never the undefended reference, whose family is none); the
    noise's variance is the mean's, 1/N of a client's."""
    s = setting_of(cfg.defense)
    if not secure(cfg):
        return s
    n = int(cfg.attack.batch_size)
    label = f"N = {n}" if s["strength"] is None else f"N = {n}, {s['strength_label']}"
    return {**s, "family": f"secure-{s['family']}", "family_title": f"secure aggregation, {s['family_title']}",
            "strength": n, "strength_label": label, "strength_rank": float(n), "variance": s["variance"] / n,
            "family_rank": len(FAMILY_ORDER) + s["family_rank"]}
