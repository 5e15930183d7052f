"""The attack (DLG, Inverting Gradients): K independent reconstructions of shared gradients,
run by Lightning.

K = num_targets x restarts problems. Problem p attacks target p // restarts: it owns dummy
images [B, C, H, W] (and, for DLG's soft labels, dummy label logits [B, classes]) and is
optimized against its target's defended gradient by a batched optimizer (optimizers.py),
all problems in one vectorized objective (problems.py, objective.py). Per target, the restart with the
lowest gradient-match loss is kept: the attacker cannot know the MSE. With `adaptive`, the
match is the defense's adaptive form (victim.defenses.AdaptiveForm): the attacker knows it.
The target is either computed here from the private batches and the defense (the victim's
update at its current weights), or given (`shared`): the defended updates a training run
sent (victim.training.intercept_round). Against FedAvg the objective unrolls the clients'
`local_steps` local SGD steps of lr `local_lr`, which the server knows.
"""
import time
import warnings
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from gradleak.engine.labels import idlg_labels
from gradleak.engine.optimizers import BATCHED_OPTIMIZERS, DIVERGED, RUNNING, STOPPED
from gradleak.engine.problems import DummyLayout, ProblemObjective
from gradleak.engine.quality import image_metrics, match_images
from gradleak.engine.schema import check_adaptive
from gradleak.engine.snapshots import Snapshots
from gradleak.engine.stopping import StopRules, count_reasons
from gradleak.victim.defenses import AdaptiveForm
from gradleak.victim.gradients import draw_noise, last_linear_weight, noise_size, per_sample_gradients, shared_gradients

# --- the Lightning module ----------------------------------------------------------------------

@dataclass
class Progress:
    """What the attack records along the way, per step of its loop."""
    step: list = field(default_factory=list)
    evals: list = field(default_factory=list)
    loss_median: list = field(default_factory=list)
    mse_median: list = field(default_factory=list)
    success_rate: list = field(default_factory=list)
    snapshot_steps: list = field(default_factory=list)
    snapshots: list = field(default_factory=list)


class AttackModule(pl.LightningModule):
    """Holds the frozen victim, the defended target gradients and the dummy data; each
    training step is one step of the attack's loop (Attack.advance): every running problem
    ends at least one step of its own."""

    def __init__(self, attack: "Attack", steps: int, snapshots: int):
        super().__init__()
        self.automatic_optimization = False
        self.attack, self.steps = attack, steps
        self.frames = Snapshots(snapshots)
        self.progress = Progress()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(list(range(self.steps)), batch_size=None)

    def configure_optimizers(self):
        return None

    def on_train_start(self):
        self._record(0)

    def on_train_batch_start(self, batch, batch_idx):
        if not self.attack.optimizer.state.running.any():
            return -1  # every problem converged, stalled or diverged: stop early

    def training_step(self, batch, batch_idx):
        self.attack.advance()
        self._record(batch_idx + 1)

    def bar_metrics(self) -> dict:
        """What the progress bar shows after each step."""
        p, targets = self.progress, len(self.attack.truth)
        if not p.step:
            return {}
        loss = p.loss_median[-1]
        return {"exact": f"{round(p.success_rate[-1] * targets)}/{targets}",  # strings: no float format
                "running": str(int(self.attack.optimizer.state.running.sum())),
                "loss": f"{loss:.1e}" if loss == loss else "-"}

    def keep_snapshots(self):
        """The snapshots, spread over the steps the attack took (it may have stopped early)."""
        self.progress.snapshot_steps, self.progress.snapshots = self.frames.chosen()

    def _record(self, step: int):
        best = self.attack.best_problems()
        recon = self.attack.reconstructions(best)
        mse = self.attack.matched_mse(recon)
        loss = self.attack.optimizer.state.loss[best]
        p = self.progress
        p.step.append(step)
        p.evals.append(float(self.attack.optimizer.state.evals[best].float().mean()))
        p.loss_median.append(float(loss.double().quantile(0.5)))  # numpy's median, as in metrics
        p.mse_median.append(float(mse.double().quantile(0.5)))
        p.success_rate.append(float((mse < self.attack.success_mse).float().mean()))
        self.frames.offer(step, recon)
        return p.loss_median[-1], p.mse_median[-1]


def attack_progress_bar():
    """Lightning's progress bar (Rich when installed, as Lightning picks), worded for the
    attack: "attack <bar> 7/300 steps ... exact 2/8 running 5" instead of "Epoch 0/0 7/300"."""
    from pytorch_lightning.callbacks import RichProgressBar, TQDMProgressBar
    from pytorch_lightning.utilities.imports import _RICH_AVAILABLE

    if _RICH_AVAILABLE:
        from rich.progress import TextColumn

        class AttackRichBar(RichProgressBar):
            def _get_train_description(self, current_epoch: int) -> str:
                return "attack"

            def configure_columns(self, trainer) -> list:
                columns = super().configure_columns(trainer)
                # [description, bar, batches, time, speed]: batches become steps, no speed
                steps = TextColumn("{task.completed:.0f}/{task.total:.0f} steps", style=self.theme.batch_progress)
                return [*columns[:2], steps, columns[3]]

            def get_metrics(self, trainer, pl_module) -> dict:
                return pl_module.bar_metrics()

        return AttackRichBar()

    class AttackTqdmBar(TQDMProgressBar):
        def on_train_epoch_start(self, trainer, *args) -> None:
            super().on_train_epoch_start(trainer, *args)
            self.train_progress_bar.set_description("attack")
            self.train_progress_bar.unit = "step"

        def get_metrics(self, trainer, pl_module) -> dict:
            return pl_module.bar_metrics()

    return AttackTqdmBar()


# --- set-up, run, results ----------------------------------------------------------------------

class Attack:
    """One attack on T targets with R restarts each, on `device`."""

    def __init__(self, cfg, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 defense, seed: int, device: torch.device, shared: list[torch.Tensor] | None = None,
                 local_steps: int = 1, local_lr: float = 0.0):
        """images [T, B, C, H, W] and labels [T, B]: the private data behind each update;
        shared: their defended updates ([T, *param] each), when intercepted in training."""
        self.cfg, self.device = cfg, device
        self.success_mse = cfg.success_mse
        self.restarts = cfg.restarts
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.truth, self.truth_labels = images.to(device), labels.to(device)
        t, b = labels.shape
        self.num_classes = num_classes = last_linear_weight(self.model).shape[0]
        self.local_steps, self.local_lr = local_steps, local_lr
        self.encoding = None  # how the client encoded its images (MixUp, InstaHide)
        self.targets = [t.to(device) for t in shared] if shared is not None else self._defended_targets(defense, seed)
        self.adaptive = adaptive_form(cfg, defense)
        soft = cfg.labels == "soft" or (cfg.labels == "auto" and b > 1)  # auto: iDLG's rule for B = 1
        self.layout = DummyLayout(b, tuple(images.shape[2:]), num_classes, soft, noise_size(self.model),
                                  self.adaptive.solve_noise)
        self.inferred_labels = None if self.layout.with_labels else idlg_labels(self.model, self.targets)
        self.target_of = torch.arange(t, device=device).repeat_interleave(self.restarts)
        self.optimizer = self._optimizer(seed)
        self.stop_rules = self._stop_rules()

    def _stop_rules(self) -> StopRules | None:
        """The stop rules of cfg.stop over the problems (None when disabled); later restarts wait."""
        if not self.cfg.stop.enabled:
            return None
        rules = StopRules(self.cfg.stop, self.restarts, len(self.target_of), self.cfg.steps, self.device)
        rules.hold_restarts(self.optimizer.state)
        return rules

    @property
    def loop_steps(self) -> int:
        """Optimizer steps of the attack's loop (staggered restarts need more than attack.steps)."""
        return self.cfg.steps if self.stop_rules is None else self.stop_rules.loop_steps

    def _defended_targets(self, defense, seed: int) -> list[torch.Tensor]:
        noise_gen = torch.Generator(device=self.device).manual_seed(seed + 1)
        images, labels = self.truth, self.truth_labels
        if getattr(defense, "encodes", False):  # MixUp, InstaHide: the client's images are encoded first
            self.encoding = defense.encode(images.flatten(0, 1), labels.flatten(), self.num_classes, noise_gen)
            images = self.encoding.images.view_as(images)
            labels = self.encoding.soft_labels.view(*labels.shape, -1)
        # PRECODE: each client's own draw of the model's noise, which the attacker never sees
        noise = draw_noise(self.model, tuple(self.truth_labels.shape), noise_gen, self.truth.dtype)
        # A per-sample defense (DP-SGD) clips each image's gradient: it gets [T, B, *param].
        if getattr(defense, "per_sample", False):
            clean, _ = per_sample_gradients(self.model, images, labels, noise)
        else:
            clean = shared_gradients(self.model, images, labels, self.local_steps, self.local_lr, noise)
        if getattr(defense, "needs_data", False):  # Soteria scores the images' representation
            return defense(clean, generator=noise_gen, batch_dims=1, data=(self.model, self.truth))
        return defense(clean, generator=noise_gen, batch_dims=1)

    def advance(self) -> None:
        """One step of the attack's loop: tick the optimizer until every problem running at
        its start has ended a step of its own. The others go on meanwhile (a problem that
        ended its step starts the next), so every objective call carries every running
        problem instead of a tail of calls for the few still in their step."""
        st = self.optimizer.state
        waited_for = st.running.clone()
        while waited_for.any():
            ended = self.optimizer.tick(torch.nonzero(st.running).squeeze(1))
            self.stop_ended(ended)
            waited_for[ended] = False
            waited_for &= st.running

    def stop_ended(self, ended: torch.Tensor) -> None:
        """The stop rules and the budget (attack.steps of its own) for problems that ended a step."""
        if ended.numel() == 0:
            return
        st = self.optimizer.state
        if self.stop_rules is not None:
            self.stop_rules.apply(ended, st, self.optimizer.initial_loss)
        spent = ended[(st.status[ended] == RUNNING) & (st.steps[ended] >= self.cfg.steps)]
        st.status[spent] = STOPPED  # no rule: its reason is the budget

    def stop_reasons(self) -> list[str]:
        """Why each problem ended (stop rule, the optimizer's own test, divergence, budget)."""
        status = self.optimizer.state.status
        if self.stop_rules is None:
            return StopRules.own_reasons(status)
        return self.stop_rules.reasons(status)

    def _optimizer(self, seed: int):
        cfg, layout = self.cfg, self.layout
        k = len(self.target_of)
        init_gen = torch.Generator(device="cpu").manual_seed(seed)
        dtype = self.truth.dtype
        images = torch.randn((k, layout.image_numel), generator=init_gen, dtype=dtype)
        logits = torch.randn((k, layout.batch * layout.num_classes), generator=init_gen, dtype=dtype)
        # the client's noise, when solved for, starts at its mean (the prior's mode)
        noise = torch.zeros((k, layout.batch * layout.noise_size * layout.solve_noise), dtype=dtype)
        x0 = torch.cat([images, logits, noise] if layout.with_labels else [images, noise], dim=1).to(self.device)
        fixed = None
        if not layout.with_labels:
            onehot = F.one_hot(self.inferred_labels, layout.num_classes).to(dtype)[:, None]
            fixed = onehot[self.target_of]
        per_problem = [t[self.target_of] for t in self.targets]
        objective = ProblemObjective(self.model, layout, per_problem, fixed, cfg.chunk_size, cfg.compile,
                                     match=self.adaptive.match or cfg.match, tv=cfg.tv,
                                     transform=self.adaptive.transform, local_steps=self.local_steps,
                                     local_lr=self.local_lr)
        opts = dict(lr=cfg.lr, max_iter=cfg.max_iter, divergence_factor=cfg.divergence_factor)
        if cfg.optimizer == "lbfgs":
            opts.update(history_size=cfg.history_size,
                        line_search=None if cfg.line_search == "none" else cfg.line_search)
        if cfg.optimizer == "signed_adam":
            opts.update(total_iterations=cfg.steps * cfg.max_iter, box=layout.image_numel)
        return BATCHED_OPTIMIZERS[cfg.optimizer](objective, x0, **opts)

    def best_problems(self) -> torch.Tensor:
        """Per target, the restart with the lowest gradient-match loss (diverged ones last)."""
        st = self.optimizer.state
        loss = torch.where(st.status == DIVERGED, torch.inf, st.loss.nan_to_num(torch.inf))
        return loss.view(-1, self.restarts).argmin(dim=1) + torch.arange(
            0, len(loss), self.restarts, device=loss.device)

    def reconstructions(self, best: torch.Tensor) -> torch.Tensor:
        """[T, B, C, H, W]; against an encoding defense, the adaptive attacker's decode of them."""
        recon = self.layout.images(self.optimizer.state.x[best])
        if self.adaptive.decode is None:
            return recon
        return self.adaptive.decode(recon.flatten(0, 1), self.encoding).view_as(recon)

    def predicted_labels(self, best: torch.Tensor) -> torch.Tensor:
        if self.layout.with_labels:
            return self.layout.labels(self.optimizer.state.x[best]).argmax(dim=-1)
        return self.inferred_labels[:, None].expand(-1, self.layout.batch)

    def matched_mse(self, recon: torch.Tensor) -> torch.Tensor:
        """Per target: mean MSE over its images after optimal assignment (clamped to [0, 1])."""
        recon = recon.clamp(0, 1)
        if self.layout.batch > 1:
            recon = torch.stack([r[match_images(r, t)] for r, t in zip(recon, self.truth)])
        return ((recon - self.truth) ** 2).flatten(1).mean(1)

    def results(self) -> list[dict]:
        """Per-target metrics of the kept restart, images matched to ground truth."""
        best = self.best_problems()
        st = self.optimizer.state
        recon, labels = self.reconstructions(best), self.predicted_labels(best)
        reasons = self.stop_reasons()
        stop_step = self.stop_rules.step if self.stop_rules is not None else None
        out = []
        for t, p in enumerate(best.tolist()):
            order = match_images(recon[t].clamp(0, 1), self.truth[t])
            m = image_metrics(recon[t][order], self.truth[t])
            diverged = bool(st.status[p] == DIVERGED)
            mse = float(m["mse"].mean())
            out.append({
                "target": t, "mse": mse, "psnr": float(m["psnr"].mean()), "ssim": float(m["ssim"].mean()),
                "label_acc": float((labels[t][order] == self.truth_labels[t]).float().mean()),
                "label": self.truth_labels[t].tolist(), "predicted": labels[t][order].tolist(),
                "loss": float(st.loss[p]), "success": (mse < self.success_mse) and not diverged,
                "diverged": diverged, "evals": int(st.evals[p]),
                "evals_all_restarts": int(st.evals[self.target_of == t].sum()),
                "stop_reason": reasons[p], "stop_step": int(stop_step[p]) if stop_step is not None else -1,
            })
            recon[t] = recon[t][order]
        self.final_reconstructions = recon.clamp(0, 1).detach().cpu()
        return out


def adaptive_form(cfg, defense) -> AdaptiveForm:
    """What the attacker changes for the defense: nothing unless `attack.adaptive`."""
    form = getattr(defense, "adaptive", None)
    check_adaptive(cfg, getattr(defense, "name", "?"), form, getattr(defense, "per_sample", False))
    return form if cfg.adaptive else AdaptiveForm()


@dataclass
class AttackOutcome:
    targets: list[dict]
    progress: Progress
    truth: torch.Tensor           # [T, B, C, H, W]
    reconstructions: torch.Tensor  # [T, B, C, H, W], matched to truth, clamped to [0, 1]
    wall_s: float
    device: str
    stopped: dict                  # problems (all restarts) per reason they ended


def run_attack(cfg, model: nn.Module, images, labels, defense, seed: int,
               accelerator: str = "auto", progress_bar: bool = True, **target) -> AttackOutcome:
    """Attack the defended updates of (images [T, B, ...], labels [T, B]); `target`:
    Attack's shared, local_steps and local_lr."""
    device = pick_device(accelerator)
    start = time.perf_counter()
    attack = Attack(cfg, model, images, labels, defense, seed, device, **target)
    module = drive(attack, cfg, device, progress_bar)
    targets = attack.results()
    return AttackOutcome(targets, module.progress, attack.truth.cpu(), attack.final_reconstructions,
                         time.perf_counter() - start, device.type, count_reasons(attack.stop_reasons()))


def drive(attack: Attack, cfg, device: torch.device, progress_bar: bool) -> AttackModule:
    """Run the attack's loop under Lightning (its progress bar); returns the module, holding
    the progress and the snapshots."""
    module = AttackModule(attack, attack.loop_steps, cfg.snapshots)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*(num_workers|does not have many workers|no optimizer"
                                          "|GPU available but not used|LitLogger).*")
        trainer = pl.Trainer(max_epochs=1, accelerator=device.type, devices=1, logger=False,
                             enable_checkpointing=False, enable_model_summary=False,
                             enable_progress_bar=progress_bar, num_sanity_val_steps=0,
                             callbacks=[attack_progress_bar()] if progress_bar else [])
        if cfg.steps > 0:
            trainer.fit(module)
        else:
            module.on_train_start()
    module.keep_snapshots()
    return module


def pick_device(accelerator: str) -> torch.device:
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if accelerator in ("gpu", "cuda"):
        raise RuntimeError(f"trainer.accelerator={accelerator}: no CUDA device is available")
    return torch.device("cpu")
