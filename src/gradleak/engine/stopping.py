"""Stop rules: each problem stops once its answer is settled, so the step budget goes to
the problems whose verdict can still change. The published loop (attack=reference) has none.

Checked after every optimizer step, on the problems still running:
- converged: the gradient-match loss fell below `converged_loss` x its initial loss (the
  reconstruction is exact; further steps polish digits far below any verdict);
- stalled: its best loss improved by less than `stall_tolerance` (relative) over the last
  `stall_steps` steps (a defended gradient has a loss floor: the noise, the pruned mass);
- losing restart: once a restart of the same target has converged, or after
  `restart_warmup` steps for a restart whose best loss is above `restart_factor` x the
  best loss of its target's best restart. Only the lowest-loss restart of a target is
  kept, and a dropped restart was far from being it.
Each problem records why and at which step it stopped.
"""
from collections import deque
from dataclasses import dataclass

import torch
from omegaconf import MISSING

from gradleak.checks import in_range
from gradleak.engine.optimizers import CONVERGED, DIVERGED, RUNNING, STALLED, STOPPED

RULES = ("converged", "stalled", "losing_restart")
# Why a problem ended, rules first; codes index this tuple.
REASONS = (*RULES, "gradient_tolerance", "fixed_point", "diverged", "budget")


@dataclass
class StopSchema:
    enabled: bool = MISSING
    converged_loss: float = MISSING
    stall_steps: int = MISSING
    stall_tolerance: float = MISSING
    restart_warmup: int = MISSING
    restart_factor: float = MISSING

    def __post_init__(self):
        in_range("attack.stop.converged_loss", self.converged_loss, low=0)
        in_range("attack.stop.stall_steps", self.stall_steps, low=1)
        in_range("attack.stop.stall_tolerance", self.stall_tolerance, low=0)
        in_range("attack.stop.restart_warmup", self.restart_warmup, low=0)
        in_range("attack.stop.restart_factor", self.restart_factor, low=1)


class StopRules:
    """The rules over K = targets x restarts problems (problem p belongs to target p // restarts)."""

    def __init__(self, cfg, restarts: int, k: int, device):
        self.cfg, self.restarts = cfg, restarts
        self.best = torch.full((k,), torch.inf, device=device)
        self.recent = deque(maxlen=cfg.stall_steps + 1)  # best loss after each of the last steps
        self.rule = torch.full((k,), -1, dtype=torch.long, device=device)  # index into RULES
        self.step = torch.full((k,), -1, dtype=torch.long, device=device)

    def apply(self, step: int, state, initial_loss: torch.Tensor) -> None:
        """After optimizer step `step`: stop the running problems a rule settles."""
        finite = torch.where(state.status == DIVERGED, torch.inf, state.loss.nan_to_num(torch.inf))
        self.best = torch.minimum(self.best, finite.to(self.best.dtype))
        self.recent.append(self.best.clone())
        running = state.status == RUNNING
        converged = self.best <= self.cfg.converged_loss * initial_loss.to(self.best.dtype)
        self._stop(state, running & converged, 0, step)
        if len(self.recent) == self.recent.maxlen:
            then = self.recent[0]
            stalled = (then - self.best) <= self.cfg.stall_tolerance * then
            self._stop(state, (state.status == RUNNING) & stalled, 1, step)
        self._stop(state, (state.status == RUNNING) & self._losing(step, converged), 2, step)

    def _losing(self, step: int, converged: torch.Tensor) -> torch.Tensor:
        per_target = self.best.view(-1, self.restarts)
        leader = per_target.min(dim=1, keepdim=True).values
        is_leader = per_target == leader
        settled = converged.view(-1, self.restarts).any(dim=1, keepdim=True)
        far = (step >= self.cfg.restart_warmup) & (per_target > self.cfg.restart_factor * leader)
        return (~is_leader & (settled | far)).flatten()

    def _stop(self, state, mask: torch.Tensor, rule: int, step: int) -> None:
        state.status[mask] = STOPPED
        self.rule[mask] = rule
        self.step[mask] = step

    def reasons(self, status: torch.Tensor) -> list[str]:
        """Why each problem ended: its rule, else the optimizer's own test, else the budget."""
        own = self.own_reasons(status)
        return [RULES[r] if r >= 0 else o for r, o in zip(self.rule.tolist(), own)]

    @staticmethod
    def own_reasons(status: torch.Tensor) -> list[str]:
        """Why each problem ended without stop rules."""
        own = {CONVERGED: "gradient_tolerance", STALLED: "fixed_point", DIVERGED: "diverged",
               RUNNING: "budget", STOPPED: "budget"}
        return [own[s] for s in status.tolist()]


def count_reasons(reasons: list[str]) -> dict[str, int]:
    return {r: reasons.count(r) for r in REASONS}
