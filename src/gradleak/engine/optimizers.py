"""Batched optimizers: K independent problems stepped together, never mixed.

`BatchedLBFGS` is K copies of torch.optim.LBFGS (same two-loop recursion, same history
rules, same stopping tests), each with its own history, step size and stopping state,
computed with batched tensor ops. `BatchedAdam` is K Adams; `BatchedSignedAdam` is K copies
of Inverting Gradients' optimizer (Adam on the gradient's sign, step decay, images boxed
to [0, 1]). All work on flat variables
x [K, n] through an objective `f(x, rows) -> (loss [k], grad [k, n])` evaluated only for
the problem rows still running; a problem whose loss turns NaN/Inf or explodes is frozen
at its last finite point and reported as diverged.
"""
from collections.abc import Callable
from dataclasses import dataclass

import torch

Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

RUNNING, CONVERGED, STALLED, DIVERGED = 0, 1, 2, 3
STOPPED = 4  # by a rule outside the optimizer (engine/stopping.py); frozen like the others
WAITING = 5  # not started yet (a restart engine/stopping.py starts later); never evaluated


@dataclass
class OptimState:
    """What every batched optimizer exposes to the attack."""
    x: torch.Tensor            # [K, n] current (or frozen) variables
    loss: torch.Tensor         # [K] last finite objective value
    status: torch.Tensor       # [K] RUNNING / CONVERGED / STALLED / DIVERGED / STOPPED / WAITING
    evals: torch.Tensor        # [K] objective evaluations spent per problem
    steps: torch.Tensor        # [K] steps each problem has ended

    @property
    def running(self) -> torch.Tensor:
        return self.status == RUNNING


class _Batched:
    def __init__(self, f: Objective, x0: torch.Tensor, divergence_factor: float):
        k = x0.shape[0]
        dev = x0.device
        self.f = f
        self.divergence_factor = divergence_factor
        self.state = OptimState(x=x0.clone(), loss=torch.full((k,), float("nan"), dtype=x0.dtype, device=dev),
                                status=torch.zeros(k, dtype=torch.long, device=dev),
                                evals=torch.zeros(k, dtype=torch.long, device=dev),
                                steps=torch.zeros(k, dtype=torch.long, device=dev))
        self.initial_loss = torch.full((k,), float("nan"), dtype=x0.dtype, device=dev)  # at its first evaluation

    def _evaluate(self, rows: torch.Tensor, x_rows: torch.Tensor):
        """f on `rows`; rows that blow up are frozen (status DIVERGED) and reported bad."""
        loss, g = self.f(x_rows, rows)
        self.state.evals[rows] += 1
        self._note_initial(rows, loss)
        return loss, g, self._accept(rows, x_rows, loss, g, torch.ones_like(rows, dtype=torch.bool))

    def _note_initial(self, rows, loss):
        first = self.initial_loss[rows].isnan()
        self.initial_loss[rows[first]] = loss[first].detach()

    def _accept(self, rows, x_eval, loss, g, mask):
        """Under `mask`: a finite, not exploding evaluation moves the problem there; any other
        freezes it as DIVERGED. Returns the accepted mask (False outside `mask`)."""
        bad = ~torch.isfinite(loss) | ~torch.isfinite(g).all(dim=1)
        bad |= loss > self.divergence_factor * self.initial_loss[rows].clamp_min(1e-30)
        self.state.status[rows[mask & bad]] = DIVERGED
        good = mask & ~bad
        self.state.x[rows[good]] = x_eval[good]
        self.state.loss[rows[good]] = loss[good]
        return good

    def tick(self, rows: torch.Tensor) -> torch.Tensor:
        """Problems that step in lockstep (Adam): a tick is a whole step of every running
        problem (`rows`, all of them); returns those that ran."""
        self.step()
        return rows


class BatchedLBFGS(_Batched):
    """K independent torch.optim.LBFGS instances; `step()` is one LBFGS.step() for each.

    line_search=None reproduces torch's fixed step (the DLG reference: lr 1); "backtracking"
    halves each problem's step until the Armijo condition holds (at most `max_ls` tries).

    Each problem is a small state machine that needs one objective evaluation at a time:
    its step's first one (at x) or a trial point x + t d of an iteration. `tick(rows)` makes
    that evaluation for all `rows` in one objective call, wherever each is in its step, so
    a problem that ends its step early can start the next while the others finish theirs
    (the attack's loop does: every call then carries every running problem). `step()`
    ticks until every running problem has ended one step, as LBFGS.step() does.
    """

    def __init__(self, f: Objective, x0: torch.Tensor, lr: float = 1.0, max_iter: int = 20,
                 history_size: int = 100, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, line_search: str | None = None,
                 max_ls: int = 10, divergence_factor: float = 1e4):
        super().__init__(f, x0, divergence_factor)
        k, n = x0.shape
        opts = dict(device=x0.device, dtype=x0.dtype)
        self.lr, self.max_iter, self.m = lr, max_iter, history_size
        self.max_eval = max_iter * 5 // 4
        self.tol_grad, self.tol_change = tolerance_grad, tolerance_change
        self.line_search, self.max_ls = line_search, max_ls
        # Per-problem history as a ring buffer of (s, y) pairs: pair i (0 = oldest) sits in
        # slot (start + i) % m of the problem's row of W [live, m, 2, n]. Its dot products live
        # in SY/YY, kept in chronological order: YY[i, j] = y_i . y_j, and SY = the compact
        # form's R, the upper triangle of s_i . y_j, with a unit diagonal where no pair is stored yet.
        # W, the one large buffer, holds only the running problems, in problem order (row
        # `row_of[p]`; -1: none), so an iteration of all of them reads it in place; it is
        # repacked when problems end or start (`_pack_history`).
        self.W = torch.zeros(k, history_size, 2, n, **opts)
        self.live = torch.arange(k, device=x0.device)
        self.row_of = torch.arange(k, device=x0.device)
        self.SY = torch.eye(history_size, **opts).repeat(k, 1, 1)
        self.YY = torch.zeros(k, history_size, history_size, **opts)
        self._spare_SY, self._spare_YY = self.SY.clone(), self.YY.clone()
        self.start = torch.zeros(k, dtype=torch.long, device=x0.device)
        self.count = torch.zeros(k, dtype=torch.long, device=x0.device)
        self.H_diag = torch.ones(k, **opts)
        self.d = torch.zeros(k, n, **opts)
        self.t = torch.zeros(k, **opts)
        self.prev_g = torch.zeros(k, n, **opts)
        self.prev_loss = torch.zeros(k, **opts)
        self.n_iter = torch.zeros(k, dtype=torch.long, device=x0.device)
        # Where each problem is in its step.
        longs = dict(dtype=torch.long, device=x0.device)
        self.in_step = torch.zeros(k, dtype=torch.bool, device=x0.device)  # False: next is a step's first evaluation
        self.it = torch.zeros(k, **longs)             # iteration within the step
        self.evals_in_step = torch.zeros(k, **longs)
        self.tries = torch.zeros(k, **longs)          # line-search trials of this iteration
        self.gtd = torch.zeros(k, **opts)             # directional derivative of this iteration
        self.x_before = x0.clone()                    # x at the step's start

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Returns each problem's loss at the start of this step (as LBFGS.step() does)."""
        st = self.state
        pending, orig_loss = st.running.clone(), None
        while True:
            rows = torch.nonzero(pending & st.running).squeeze(1)
            if rows.numel() == 0:
                break
            ended = self.tick(rows)
            if orig_loss is None:
                orig_loss = st.loss.clone()
            pending[ended] = False
        return st.loss.clone() if orig_loss is None else orig_loss

    @torch.no_grad()
    def tick(self, rows: torch.Tensor) -> torch.Tensor:
        """One objective call for `rows` (sorted, running); returns those that ended a step."""
        st = self.state
        self._pack_history()
        starting = ~self.in_step[rows]
        x = st.x[rows]
        x_eval = torch.where(starting[:, None], x, x + self.t[rows, None] * self.d[rows])
        loss, g = self.f(x_eval, rows)
        st.evals[rows] += 1
        self.evals_in_step[rows] += 1
        self._note_initial(rows, loss)
        ends = torch.zeros_like(starting)
        # A step's first evaluation: torch's LBFGS.step() before its loop.
        ok = self._accept(rows, x_eval, loss, g, starting)
        self.x_before[rows[starting]] = x[starting]
        converged = ok & (g.abs().amax(dim=1) <= self.tol_grad)
        st.status[rows[converged]] = CONVERGED
        ends |= starting & (~ok | converged)
        begins = starting & ok & ~converged
        self.it[rows[starting]] = 0
        self.evals_in_step[rows[starting]] = 1
        # A trial point of an iteration.
        trial = ~starting
        if self.line_search is None:
            accepted = self._accept(rows, x_eval, loss, g, trial)
            ended_iteration, finished = trial, trial & accepted
        else:
            finished, loss, g = self._backtrack(rows, trial, x_eval, loss, g)
            accepted, ended_iteration = finished, finished
        stop = ended_iteration & ~(finished & self._continues(rows, loss, g, accepted))
        ends |= stop
        going_on = ended_iteration & ~stop
        self.it[rows[going_on]] += 1
        begins |= going_on
        ends |= self._begin_iteration(rows, begins, loss, g)
        self.in_step[rows[begins]] = True
        return self._end_steps(rows[ends])

    def _backtrack(self, rows, trial, x_eval, loss, g, c1: float = 1e-4):
        """Armijo backtracking per problem: a trial that decreases enough is taken; else the
        step size halves, and after `max_ls` misses the problem keeps its point (a zero step,
        which ends its step). Returns the rows whose line search finished, and the loss and
        gradient each iteration goes on from."""
        fin = torch.isfinite(loss) & torch.isfinite(g).all(dim=1)
        loss0 = self.prev_loss[rows]
        accept = trial & fin & (loss <= loss0 + c1 * self.t[rows] * self.gtd[rows])
        self.state.x[rows[accept]] = x_eval[accept]
        self.state.loss[rows[accept]] = loss[accept]
        missed = trial & ~accept
        self.tries[rows[missed]] += 1
        self.t[rows[missed]] *= 0.5
        gave_up = missed & (self.tries[rows] >= self.max_ls)
        self.t[rows[gave_up]] = 0.0
        loss = torch.where(gave_up, loss0, loss)
        g = torch.where(gave_up[:, None], self.prev_g[rows], g)
        return accept | gave_up, loss, g

    def _continues(self, rows, loss, g, accepted):
        """torch's tests at the end of an iteration: does the step go on?"""
        opt_cond = g.abs().amax(dim=1) <= self.tol_grad
        self.state.status[rows[accepted & opt_cond]] = CONVERGED
        stop = opt_cond | (self.it[rows] == self.max_iter - 1) | (self.evals_in_step[rows] >= self.max_eval)
        stop |= (self.d[rows] * self.t[rows, None]).abs().amax(dim=1) <= self.tol_change
        stop |= (loss - self.prev_loss[rows]).abs() < self.tol_change
        return ~stop

    def _begin_iteration(self, rows, begins, loss, g):
        """Direction and step size for the rows under `begins`; returns those that end their
        step here (no descent, or torch's unevaluated last fixed step)."""
        r, loss, g = rows[begins], loss[begins], g[begins]
        ends = torch.zeros_like(begins)
        if r.numel() == 0:
            return ends
        self.n_iter[r] += 1
        d = self._direction(r, g)
        self.prev_g[r], self.prev_loss[r] = g, loss
        first = self.n_iter[r] == 1
        t = torch.where(first, torch.clamp(1.0 / g.abs().sum(dim=1), max=1.0) * self.lr,
                        torch.full_like(loss, self.lr))
        gtd = (g * d).sum(dim=1)
        self.d[r], self.t[r], self.gtd[r] = d, t, gtd
        no_descent = gtd > -self.tol_change  # torch: "directional derivative below tolerance"
        unevaluated = torch.zeros_like(no_descent)
        if self.line_search is None:  # torch does not evaluate after the final iteration
            unevaluated = ~no_descent & (self.it[r] == self.max_iter - 1)
            last = r[unevaluated]
            self.state.x[last] += t[unevaluated, None] * d[unevaluated]
        self.tries[r] = 0
        ends[begins.nonzero().squeeze(1)[no_descent | unevaluated]] = True
        return ends

    def _direction(self, rows, g):
        """-H g with each problem's own L-BFGS inverse-Hessian approximation H.

        Computed in the compact form of Byrd, Nocedal & Schnabel (1994), which equals
        torch's two-loop recursion in exact arithmetic but reads the history twice per
        iteration (one product with [g, y], one combination) instead of 4 x history
        sequential vector updates.
        """
        first = self.n_iter[rows] == 1
        y = torch.where(first[:, None], 0.0, g - self.prev_g[rows])
        s = self.d[rows] * self.t[rows][:, None]
        added = self._add_pairs(rows, ~first, s, y)
        used = int(self.count[rows].max())
        if used == 0:
            return -g
        if len(rows) < len(self.live) <= 3 * len(rows):
            # Most running problems take part: computing for all of them (zeros for the
            # others) costs less than gathering their histories and matrices.
            live = self.live
            Hg = self._inverse_hessian_times(live, self._pad(g, rows), self._pad(y, rows),
                                             self._pad(added, rows), int(self.count[live].max()))
            Hg = Hg[self.row_of[rows]]
        else:
            Hg = self._inverse_hessian_times(rows, g, y, added, used)
        return torch.where(first[:, None], -g, -Hg)

    def _inverse_hessian_times(self, rows, g, y, added, used):
        """H g for `rows`, after recording the products of their `added` new pairs."""
        perm = (self.start[rows, None] + torch.arange(used, device=g.device)) % self.m  # chrono -> slot
        dots = self._history_dots(torch.stack([g, y], dim=1), rows, used)  # [k, used, 2, 2] by slot
        dots = dots.gather(1, perm[:, :, None, None].expand(-1, -1, 2, 2))  # chronological
        self._record_products(rows[added], dots[added], self.count[rows[added]] - 1, used)
        # Slots beyond a problem's count hold zeros, and so do their entries of S g, Y g and
        # YY: no masking is needed (R's unit diagonal there makes v and top zero).
        gamma = self.H_diag[rows]
        R, YY = (self._rows(M, rows)[:, :used, :used] for M in (self.SY, self.YY))
        p1, p2 = dots[:, :, 0, 0, None], gamma[:, None, None] * dots[:, :, 1, 0, None]  # S g, gamma Y g
        v = torch.linalg.solve_triangular(R, p1, upper=True)
        DYv = R.diagonal(dim1=1, dim2=2)[:, :, None] * v + gamma[:, None, None] * (YY @ v)
        top = torch.linalg.solve_triangular(R.mT, DYv - p2, upper=False)
        coef = torch.stack([top.squeeze(2), -gamma[:, None] * v.squeeze(2)], dim=2)  # [k, used, 2]
        coef_slot = torch.zeros_like(coef).scatter(1, perm[:, :, None].expand(-1, -1, 2), coef)
        return gamma[:, None] * g + self._history_combine(coef_slot, rows, used)

    def _add_pairs(self, rows, update, s, y):
        """Store each updating problem's new (s, y) pair if it passes torch's curvature
        test (y . s > 1e-10); when the history is full the oldest pair is dropped."""
        ys = (y * s).sum(dim=1)
        added = update & (ys > 1e-10)
        r = rows[added]
        if r.numel() == 0:
            return added
        full = self.count[r] == self.m
        slot = (self.start[r] + self.count[r]) % self.m  # == start when full: the oldest
        self.W[self.row_of[r], slot, 0], self.W[self.row_of[r], slot, 1] = s[added], y[added]
        self._drop_oldest(r[full])
        self.start[r] = torch.where(full, (self.start[r] + 1) % self.m, self.start[r])
        self.count[r] = torch.clamp(self.count[r] + 1, max=self.m)
        self.H_diag[r] = ys[added] / (y[added] * y[added]).sum(dim=1)
        return added

    def _drop_oldest(self, rows):
        """Chronological matrices of full histories lose their first row and column: in the
        flattened [m * m] layout, entry (i, j) moves m + 1 places back, one contiguous copy.
        What lands in the last column (and YY's last row) is overwritten by the new pair's
        products; R's last row below the diagonal is zero in both buffers."""
        if rows.numel() == 0:
            return
        keep, k = self.m * self.m - self.m - 1, len(self.SY)
        if 3 * len(rows) < k:  # few problems: move only theirs
            for M in (self.SY, self.YY):
                flat = M.view(k, -1)
                flat[rows, :keep] = flat[rows, self.m + 1:]
            return
        # Many: write every problem's matrices, shifted or not, into the spare buffers and swap.
        shift = torch.zeros(k, 1, dtype=torch.bool, device=rows.device)
        shift[rows] = True
        for M, spare in ((self.SY, self._spare_SY), (self.YY, self._spare_YY)):
            old, new = M.view(k, -1), spare.view(k, -1)
            if len(rows) == k:
                new[:, :keep] = old[:, self.m + 1:]
            else:
                torch.where(shift, old[:, self.m + 1:], old[:, :keep], out=new[:, :keep])
            new[:, keep:] = old[:, keep:]
        self.SY, self._spare_SY = self._spare_SY, self.SY
        self.YY, self._spare_YY = self._spare_YY, self.YY

    def _record_products(self, rows, dots, j, used):
        """Fill column j (the new pair) of R and row and column j of YY from the history
        products: dots[:, i] holds (s_i, y_i) . (g, y_new). Entries below R's diagonal stay 0."""
        if rows.numel() == 0:
            return
        r, i = rows[:, None], torch.arange(used, device=rows.device)[None, :]
        self.SY[r, i, j[:, None]] = dots[:, :, 0, 1]  # s_i . y_new
        self.YY[r, j[:, None], i] = dots[:, :, 1, 1]
        self.YY[r, i, j[:, None]] = dots[:, :, 1, 1]

    # History products for `rows` over the first `used` slots: `rows` is every running problem
    # (W is read in place) or a few (their part is gathered; see `_direction`).
    def _history_dots(self, V, rows, used):
        """(s_i, y_i) . V[:, c] per slot i: V [k, c, n] -> [k, used, 2, c]. MKL streams the
        history fastest as W @ V^T for c = 2 (V @ W^T is 2x slower, c = 3 several times)."""
        return (self._history(rows, used) @ V.mT).unflatten(1, (used, 2))

    def _history_combine(self, coef, rows, used):
        """sum_i coef[:, i, 0] s_i + coef[:, i, 1] y_i: coef [k, used, 2] -> [k, n]."""
        return (coef.flatten(1)[:, None, :] @ self._history(rows, used)).squeeze(1)

    def _history(self, rows, used):
        """The (s, y) pairs of `rows` (sorted, unique, running) in their first `used` slots, as
        [k, 2 used, n]: a view of W when they are all the running problems."""
        W = self.W[:, :used] if len(rows) == len(self.W) else self.W[self.row_of[rows], :used]
        return W.flatten(1, 2)

    def _rows(self, M, rows):
        """M[rows] without copying when every problem takes part (rows are sorted, unique)."""
        return M if len(rows) == len(M) else M[rows]

    def _pad(self, v, rows):
        """v of `rows` in the running problems' order, zeros for the others."""
        if len(rows) == len(self.live):
            return v
        full = v.new_zeros((len(self.live), *v.shape[1:]))
        full[self.row_of[rows]] = v
        return full

    def _pack_history(self):
        """Keep W's rows for the running problems only: after problems ended (their history is
        never read again) or started (a restart, with an empty history)."""
        running = torch.nonzero(self.state.running).squeeze(1)
        if len(running) == len(self.live) and bool((running == self.live).all()):
            return
        rows = self.row_of[running]
        had = rows >= 0
        W = self.W.new_zeros((len(running), *self.W.shape[1:]))
        W[had] = self.W[rows[had]]
        self.W, self.live = W, running
        self.row_of = torch.full_like(self.row_of, -1)
        self.row_of[running] = torch.arange(len(running), device=running.device)

    def _end_steps(self, rows):
        """Close the step of `rows`: a problem whose whole step did not move sits at a fixed
        point of LBFGS (done); the others start their next step at their next tick."""
        still = self.state.status[rows] == RUNNING
        unmoved = (self.state.x[rows] == self.x_before[rows]).all(dim=1)
        self.state.status[rows[still & unmoved]] = STALLED
        self.in_step[rows] = False
        self.state.steps[rows] += 1
        return rows


class BatchedAdam(_Batched):
    """K independent Adams; `step()` makes `max_iter` updates so that a step costs about as
    many objective evaluations as an L-BFGS step."""

    def __init__(self, f: Objective, x0: torch.Tensor, lr: float = 0.1, max_iter: int = 20,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 divergence_factor: float = 1e4):
        super().__init__(f, x0, divergence_factor)
        self.lr, self.max_iter, self.betas, self.eps = lr, max_iter, betas, eps
        self.m1 = torch.zeros_like(x0)
        self.m2 = torch.zeros_like(x0)
        self.n_iter = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        st = self.state
        orig_loss = None
        st.steps[st.running] += 1
        for _ in range(self.max_iter):
            rows = torch.nonzero(st.running).squeeze(1)
            if rows.numel() == 0:
                break
            loss, g, ok = self._evaluate(rows, st.x[rows])
            if orig_loss is None:
                orig_loss = st.loss.clone()
            rows, g = rows[ok], g[ok]
            self.n_iter[rows] += 1
            b1, b2 = self.betas
            self.m1[rows] = b1 * self.m1[rows] + (1 - b1) * g
            self.m2[rows] = b2 * self.m2[rows] + (1 - b2) * g * g
            n = self.n_iter[rows].to(g.dtype)[:, None]
            m_hat = self.m1[rows] / (1 - b1**n)
            v_hat = self.m2[rows] / (1 - b2**n)
            st.x[rows] = st.x[rows] - self.lr * m_hat / (v_hat.sqrt() + self.eps)
        return st.loss.clone() if orig_loss is None else orig_loss


def ig_milestones(total_iterations: int) -> list[float]:
    """Inverting Gradients' MultiStepLR milestones (about 3/8, 5/8 and 7/8 of the run),
    computed as its code does."""
    return [total_iterations // 2.667, total_iterations // 1.6, total_iterations // 1.142]


class BatchedSignedAdam(_Batched):
    """K independent copies of Inverting Gradients' optimizer (Geiping et al., 2020):
    torch.optim.Adam fed sign(gradient), its step size times `gamma` at each of
    `ig_milestones(total_iterations)` (torch's MultiStepLR stepped once per update), and the
    first `box` variables (the images) clamped to [0, 1] after every update. A problem
    keeps its own iteration count, so its schedule does not depend on the others.
    `step()` makes `max_iter` updates, like BatchedAdam. A problem that diverges is frozen
    at its last finite point."""

    def __init__(self, f: Objective, x0: torch.Tensor, lr: float = 0.1, max_iter: int = 20,
                 total_iterations: int = 4800, box: int | None = None, gamma: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 divergence_factor: float = 1e4):
        super().__init__(f, x0, divergence_factor)
        self.lr, self.max_iter, self.gamma, self.betas, self.eps = lr, max_iter, gamma, betas, eps
        self.box = x0.shape[1] if box is None else box
        self.milestones = torch.tensor(ig_milestones(total_iterations), dtype=torch.float64, device=x0.device)
        self.m1 = torch.zeros_like(x0)
        self.m2 = torch.zeros_like(x0)
        self.prev_x = x0.clone()
        self.n_iter = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)

    def step_sizes(self, rows: torch.Tensor) -> torch.Tensor:
        """Each problem's step size for its next update (MultiStepLR after n_iter steps)."""
        passed = (self.milestones[None, :] <= self.n_iter[rows, None].to(torch.float64)).sum(dim=1)
        return self.lr * self.gamma ** passed.to(self.m1.dtype)

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        st = self.state
        orig_loss = None
        st.steps[st.running] += 1
        for _ in range(self.max_iter):
            rows = torch.nonzero(st.running).squeeze(1)
            if rows.numel() == 0:
                break
            _, g, ok = self._evaluate(rows, st.x[rows])
            if orig_loss is None:
                orig_loss = st.loss.clone()
            bad = rows[~ok]
            st.x[bad] = self.prev_x[bad]  # back to the last point that evaluated finite
            rows, g = rows[ok], g[ok].sign()
            lr = self.step_sizes(rows)[:, None]
            self.n_iter[rows] += 1
            b1, b2 = self.betas
            self.m1[rows] = b1 * self.m1[rows] + (1 - b1) * g
            self.m2[rows] = b2 * self.m2[rows] + (1 - b2) * g * g
            n = self.n_iter[rows].to(g.dtype)[:, None]
            denom = self.m2[rows].sqrt() / (1 - b2**n).sqrt() + self.eps  # torch.optim.Adam's order
            x = st.x[rows]
            self.prev_x[rows] = x
            x = x - (lr / (1 - b1**n)) * self.m1[rows] / denom
            x[:, :self.box] = x[:, :self.box].clamp(0, 1)
            st.x[rows] = x
        return st.loss.clone() if orig_loss is None else orig_loss


BATCHED_OPTIMIZERS = {"lbfgs": BatchedLBFGS, "adam": BatchedAdam, "signed_adam": BatchedSignedAdam}
