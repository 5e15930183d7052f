"""Stop rules: each problem stops once its answer is settled, so the step budget goes to
the problems whose verdict can still change. The published loop (attack=reference) has none.

Checked on a running problem each time it ends a step of its own:
- converged: the gradient-match loss fell below `converged_loss` x its initial loss (the
  reconstruction is exact; further steps polish digits far below any verdict);
- stalled: its best loss improved by less than `stall_tolerance` (relative) over its last
  `stall_steps` steps (a defended gradient has a loss floor: the noise, the pruned mass);
- losing restart: once a restart of the same target has converged, or after
  `restart_warmup` steps for a restart whose best loss is above `restart_factor` x the
  best loss its target's best restart had after as many steps of its own. Only the
  lowest-loss restart of a target is kept, and a dropped restart was far from being it.
- budget: a problem that has taken `attack.steps` steps of its own.
Restarts are staggered (`restart_delay` = d > 0): restart r + 1 of a target starts once
restart r has taken d steps or ended, and never once a restart of the target converged.
A target settled by its first restart then costs one restart, not all of them, and every
restart still gets the whole step budget: the loop runs steps + (restarts - 1) x d steps.
Each problem records why and, when a rule stopped it, after how many steps of its own.
"""
from dataclasses import dataclass

import torch
from omegaconf import MISSING

from gradleak.checks import in_range
from gradleak.engine.optimizers import CONVERGED, DIVERGED, RUNNING, STALLED, STOPPED, WAITING

RULES = ("converged", "stalled", "losing_restart")
# Why a problem ended, rules first; codes index this tuple.
REASONS = (*RULES, "gradient_tolerance", "fixed_point", "diverged", "budget", "not_started")


@dataclass
class StopSchema:
    enabled: bool = MISSING
    converged_loss: float = MISSING
    stall_steps: int = MISSING
    stall_tolerance: float = MISSING
    restart_warmup: int = MISSING
    restart_factor: float = MISSING
    restart_delay: int = MISSING

    def __post_init__(self):
        in_range("attack.stop.converged_loss", self.converged_loss, low=0)
        in_range("attack.stop.stall_steps", self.stall_steps, low=1)
        in_range("attack.stop.stall_tolerance", self.stall_tolerance, low=0)
        in_range("attack.stop.restart_warmup", self.restart_warmup, low=0)
        in_range("attack.stop.restart_factor", self.restart_factor, low=1)
        in_range("attack.stop.restart_delay", self.restart_delay, low=0)


class StopRules:
    """The rules over K = targets x restarts problems (problem p belongs to target p // restarts),
    each with a budget of `steps` steps of its own."""

    def __init__(self, cfg, restarts: int, k: int, steps: int, device):
        self.cfg, self.restarts, self.steps = cfg, restarts, steps
        self.best = torch.full((k,), torch.inf, device=device)
        self.trace = torch.full((k, steps + 1), torch.inf, device=device)  # best after each own step
        self.rule = torch.full((k,), -1, dtype=torch.long, device=device)  # index into RULES
        self.step = torch.full((k,), -1, dtype=torch.long, device=device)  # own step it stopped at

    @property
    def loop_steps(self) -> int:
        """Steps of the attack's loop: room for every restart's whole budget."""
        return self.steps + (self.restarts - 1) * self.cfg.restart_delay

    def hold_restarts(self, state) -> None:
        """Before the first step: with a delay, only each target's first restart runs."""
        if self.cfg.restart_delay > 0:
            state.status.view(-1, self.restarts)[:, 1:] = WAITING

    def apply(self, ended: torch.Tensor, state, initial_loss: torch.Tensor) -> None:
        """After the problems `ended` (indices) ended a step of their own (state.steps counts
        them): stop those a rule settles, start the restarts that are due."""
        taken = state.steps  # each problem's own steps
        finite = torch.where(state.status == DIVERGED, torch.inf, state.loss.nan_to_num(torch.inf))
        self.best[ended] = torch.minimum(self.best[ended], finite[ended].to(self.best.dtype))
        self.trace[ended, taken[ended].clamp(max=self.steps)] = self.best[ended]
        judged = torch.zeros_like(self.best, dtype=torch.bool)
        judged[ended] = True
        converged = self.best <= self.cfg.converged_loss * initial_loss.to(self.best.dtype)
        self._stop(state, judged & converged, 0)
        s = self.cfg.stall_steps
        then = self.trace.gather(1, (taken - s).clamp(min=0, max=self.steps)[:, None]).squeeze(1)
        stalled = (taken > s) & ((then - self.best) <= self.cfg.stall_tolerance * then)
        self._stop(state, judged & stalled, 1)
        self._stop(state, judged & self._losing(converged, taken), 2)
        self._start_due(state, converged)

    def _losing(self, converged: torch.Tensor, taken: torch.Tensor) -> torch.Tensor:
        """Non-leaders of a settled target; after the warm-up, restarts far above the best
        loss their target's best restart had after as many steps of its own."""
        per_target = self.best.view(-1, self.restarts)
        is_leader = per_target == per_target.min(dim=1, keepdim=True).values
        settled = converged.view(-1, self.restarts).any(dim=1, keepdim=True)
        taken = taken.view(-1, self.restarts)
        # [targets, p, s]: restart s's best after min(taken_p, taken_s) steps of its own
        at = torch.minimum(taken[:, :, None], taken[:, None, :])
        trace = self.trace.view(len(taken), self.restarts, -1)
        sibling = trace[:, None].expand(-1, self.restarts, -1, -1).gather(3, at[..., None]).squeeze(3)
        leader_then = sibling.min(dim=2).values
        far = (taken >= self.cfg.restart_warmup) & (per_target > self.cfg.restart_factor * leader_then)
        return ((~is_leader & settled) | far).flatten()

    def _start_due(self, state, converged: torch.Tensor) -> None:
        """Start restart r + 1 of an unsettled target once restart r has taken the delay or ended."""
        status = state.status.view(-1, self.restarts)
        settled = converged.view(-1, self.restarts).any(dim=1, keepdim=True)
        previous = status[:, :-1]
        due = (previous != WAITING) & ((previous != RUNNING) | (state.steps.view(-1, self.restarts)[:, :-1]
                                                                >= self.cfg.restart_delay))
        start = (status[:, 1:] == WAITING) & due & ~settled
        status[:, 1:][start] = RUNNING

    def _stop(self, state, mask: torch.Tensor, rule: int) -> None:
        mask = mask & (state.status == RUNNING)
        state.status[mask] = STOPPED
        self.rule[mask] = rule
        self.step[mask] = state.steps[mask]

    def reasons(self, status: torch.Tensor) -> list[str]:
        """Why each problem ended: its rule, else the optimizer's own test, else the budget."""
        own = self.own_reasons(status)
        return [RULES[r] if r >= 0 else o for r, o in zip(self.rule.tolist(), own)]

    @staticmethod
    def own_reasons(status: torch.Tensor) -> list[str]:
        """Why each problem ended without stop rules."""
        own = {CONVERGED: "gradient_tolerance", STALLED: "fixed_point", DIVERGED: "diverged",
               RUNNING: "budget", STOPPED: "budget", WAITING: "not_started"}
        return [own[s] for s in status.tolist()]


def count_reasons(reasons: list[str]) -> dict[str, int]:
    return {r: reasons.count(r) for r in REASONS}
