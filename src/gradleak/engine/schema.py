"""The attack group's types and ranges; the values live in conf/attack/*.yaml only.

Kept apart from the attack itself so that checking a config (preflight, in the launching
process) imports no Lightning.
"""
from dataclasses import dataclass

from omegaconf import MISSING

from gradleak.checks import ConfigError, choice, fail, in_range
from gradleak.engine.objective import MATCHES
from gradleak.engine.optimizers import BATCHED_OPTIMIZERS
from gradleak.engine.stopping import StopSchema


@dataclass
class AttackSchema:
    """The attack group's types and ranges; the values live in conf/attack/*.yaml."""
    name: str = MISSING
    num_targets: int = MISSING
    batch_size: int = MISSING
    labels: str = MISSING
    restarts: int = MISSING
    steps: int = MISSING
    optimizer: str = MISSING
    lr: float = MISSING
    max_iter: int = MISSING
    history_size: int = MISSING
    line_search: str = MISSING
    divergence_factor: float = MISSING
    success_mse: float = MISSING
    distractors: int = MISSING
    chunk_size: int = MISSING
    compile: bool = MISSING
    snapshots: int = MISSING
    match: str = MISSING
    tv: float = MISSING
    adaptive: bool = MISSING
    stop: StopSchema = MISSING
    round: int | None = MISSING  # attack the training's clients at this step (None: the initial model)

    def __post_init__(self):
        for key in ("num_targets", "batch_size", "restarts", "max_iter", "history_size"):
            in_range(f"attack.{key}", getattr(self, key), low=1)
        for key in ("steps", "chunk_size", "snapshots"):
            in_range(f"attack.{key}", getattr(self, key), low=0)
        choice("attack.labels", self.labels, ("soft", "idlg", "auto"))
        if self.labels == "idlg" and self.batch_size != 1:
            fail("attack.labels", "idlg", "with attack.batch_size=1 only (iDLG's label rule)")
        choice("attack.optimizer", self.optimizer, tuple(BATCHED_OPTIMIZERS))
        choice("attack.line_search", self.line_search, ("none", "backtracking"))
        in_range("attack.lr", self.lr, low=0, low_open=True)
        in_range("attack.divergence_factor", self.divergence_factor, low=1, low_open=True)
        in_range("attack.success_mse", self.success_mse, low=0, low_open=True)
        in_range("attack.distractors", self.distractors, low=1)
        choice("attack.match", self.match, MATCHES)
        in_range("attack.tv", self.tv, low=0)
        if self.round is not None:
            in_range("attack.round", self.round, low=0)


def check_adaptive(attack, defense: str, form, per_sample: bool) -> None:
    """attack.adaptive=true needs the defense's adaptive form (`form`, None: it has none). A
    per-sample defense (DP-SGD) is attacked adaptively on one image per gradient only: the
    objective has the dummy batch's gradient, not its per-sample gradients."""
    if not attack.adaptive:
        return
    if form is None:
        raise ConfigError(f"attack.adaptive=true: defense={defense} has no adaptive form")
    if per_sample and attack.batch_size != 1:
        fail("attack.batch_size", attack.batch_size, "1 with attack.adaptive=true under a per-sample defense")
    if form.decode is not None and attack.batch_size != 1:  # the decode maps each problem to its encoding
        fail("attack.batch_size", attack.batch_size, f"1 with attack.adaptive=true under defense={defense}")
    if form.decode is not None and attack.get("round") is not None:
        fail("attack.round", attack.round, f"null with attack.adaptive=true under defense={defense} "
             "(the decode needs the client's encoding, which a training round does not keep)")


def attacker_name(attack) -> str:
    """How tables and figures name the attacker: its name, `adaptive` when it attacks
    through the defense (dlg, ig, dlg adaptive)."""
    return f"{attack.name} adaptive" if attack.adaptive else str(attack.name)
