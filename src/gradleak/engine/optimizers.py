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
                                evals=torch.zeros(k, dtype=torch.long, device=dev))
        self.initial_loss = torch.full((k,), float("nan"), dtype=x0.dtype, device=dev)  # at its first evaluation

    def _evaluate(self, rows: torch.Tensor, x_rows: torch.Tensor):
        """f on `rows`; rows that blow up are frozen (status DIVERGED) and reported bad."""
        loss, g = self.f(x_rows, rows)
        self.state.evals[rows] += 1
        first = self.initial_loss[rows].isnan()
        self.initial_loss[rows[first]] = loss[first].detach()
        bad = ~torch.isfinite(loss) | ~torch.isfinite(g).all(dim=1)
        bad |= loss > self.divergence_factor * self.initial_loss[rows].clamp_min(1e-30)
        if bad.any():
            self.state.status[rows[bad]] = DIVERGED
        good = rows[~bad]
        self.state.x[good] = x_rows[~bad]
        self.state.loss[good] = loss[~bad]
        return loss, g, ~bad


class BatchedLBFGS(_Batched):
    """K independent torch.optim.LBFGS instances; `step()` is one LBFGS.step() for each.

    line_search=None reproduces torch's fixed step (the DLG reference: lr 1); "backtracking"
    halves each problem's step until the Armijo condition holds (at most `max_ls` tries).
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
        # slot (start + i) % m of W [K, m, 2, n]. Its dot products live in SY/YY, kept in
        # chronological order: YY[i, j] = y_i . y_j, and SY = the compact form's R, the upper
        # triangle of s_i . y_j, with a unit diagonal where no pair is stored yet.
        self.W = torch.zeros(k, history_size, 2, n, **opts)
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

    # -- one LBFGS.step() per running problem ------------------------------------------------
    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Returns each problem's loss at the start of this step (as LBFGS.step() does)."""
        st = self.state
        rows = torch.nonzero(st.running).squeeze(1)
        if rows.numel() == 0:
            return st.loss.clone()
        rows_at_start, x_before = rows, st.x[rows].clone()
        loss, g, ok = self._evaluate(rows, st.x[rows])
        orig_loss = st.loss.clone()
        rows, loss, g = rows[ok], loss[ok], g[ok]
        converged = g.abs().amax(dim=1) <= self.tol_grad
        st.status[rows[converged]] = CONVERGED
        rows, loss, g = rows[~converged], loss[~converged], g[~converged]
        evals_in_step = torch.ones_like(rows)
        for it in range(self.max_iter):
            if rows.numel() == 0:
                break
            rows, loss, g, evals_in_step = self._iteration(it, rows, loss, g, evals_in_step)
        self._mark_stalled(rows_at_start, x_before)
        return orig_loss

    def _iteration(self, it, rows, loss, g, evals_in_step):
        self.n_iter[rows] += 1
        d = self._direction(rows, g)
        self.prev_g[rows] = g
        self.prev_loss[rows] = loss
        first = self.n_iter[rows] == 1
        t = torch.where(first, torch.clamp(1.0 / g.abs().sum(dim=1), max=1.0) * self.lr,
                        torch.full_like(loss, self.lr))
        gtd = (g * d).sum(dim=1)
        self.d[rows], self.t[rows] = d, t
        keep = gtd <= -self.tol_change  # torch: "directional derivative below tolerance"
        rows, loss, g, d, t, gtd, evals_in_step = (a[keep] for a in (rows, loss, g, d, t, gtd, evals_in_step))
        if rows.numel() == 0:
            return rows, loss, g, evals_in_step
        prev_loss = loss
        last = it == self.max_iter - 1
        if self.line_search is None:
            x_new = self.state.x[rows] + t[:, None] * d
            if last:  # torch does not re-evaluate after the final iteration
                self.state.x[rows] = x_new
                return rows[:0], loss[:0], g[:0], evals_in_step[:0]
            loss, g, ok = self._evaluate(rows, x_new)
            evals_in_step = evals_in_step + 1
        else:
            loss, g, t, ok, used = self._backtrack(rows, loss, d, t, gtd)
            self.t[rows] = t
            evals_in_step = evals_in_step + used
        opt_cond = g.abs().amax(dim=1) <= self.tol_grad
        self.state.status[rows[ok & opt_cond]] = CONVERGED
        stop = ~ok | opt_cond | last | (evals_in_step >= self.max_eval)
        stop |= (d * t[:, None]).abs().amax(dim=1) <= self.tol_change
        stop |= (loss - prev_loss).abs() < self.tol_change
        return rows[~stop], loss[~stop], g[~stop], evals_in_step[~stop]

    def _backtrack(self, rows, loss0, d, t, gtd, c1: float = 1e-4):
        """Armijo backtracking per problem; a problem that finds no decrease keeps its point."""
        x0 = self.state.x[rows].clone()
        loss, g = loss0.clone(), torch.zeros_like(d)
        ok = torch.ones_like(loss0, dtype=torch.bool)
        done = torch.zeros_like(ok)
        used = torch.zeros_like(rows)
        for _ in range(self.max_ls):
            idx = torch.nonzero(~done).squeeze(1)
            if idx.numel() == 0:
                break
            trial_loss, trial_g = self.f(x0[idx] + t[idx, None] * d[idx], rows[idx])
            fin = torch.isfinite(trial_loss) & torch.isfinite(trial_g).all(dim=1)
            self.state.evals[rows[idx]] += 1
            used[idx] += 1
            accept = fin & (trial_loss <= loss0[idx] + c1 * t[idx] * gtd[idx])
            hit = idx[accept]
            loss[hit], g[hit], done[hit] = trial_loss[accept], trial_g[accept], True
            self.state.x[rows[hit]] = x0[hit] + t[hit, None] * d[hit]
            self.state.loss[rows[hit]] = trial_loss[accept]
            t[idx[~accept]] *= 0.5
        # No acceptable step: stay put (a zero step ends this problem's step below).
        miss = ~done
        t[miss] = 0.0
        g[miss] = self.prev_g[rows[miss]]
        return loss, g, t, ok, used

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
        if len(rows) < len(self.W) <= 3 * len(rows):
            # Most problems take part: computing for all of them (zeros for the others)
            # costs less than gathering their histories and matrices.
            everyone = torch.arange(len(self.W), device=g.device)
            Hg = self._inverse_hessian_times(everyone, self._pad(g, rows), self._pad(y, rows),
                                             self._pad(added, rows), int(self.count.max()))[rows]
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
        self.W[r, slot, 0], self.W[r, slot, 1] = s[added], y[added]
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

    # History products for `rows` over the first `used` slots: `rows` is every problem (the
    # buffer is used as is) or a few (their part is gathered; see `_direction`).
    def _history_dots(self, V, rows, used):
        """(s_i, y_i) . V[:, c] per slot i: V [k, c, n] -> [k, used, 2, c]. MKL streams the
        history fastest as W @ V^T for c = 2 (V @ W^T is 2x slower, c = 3 several times)."""
        W = self._rows(self.W[:, :used], rows).flatten(1, 2)
        return (W @ V.mT).unflatten(1, (used, 2))

    def _history_combine(self, coef, rows, used):
        """sum_i coef[:, i, 0] s_i + coef[:, i, 1] y_i: coef [k, used, 2] -> [k, n]."""
        W = self._rows(self.W[:, :used], rows).flatten(1, 2)
        return (coef.flatten(1)[:, None, :] @ W).squeeze(1)

    def _rows(self, M, rows):
        """M[rows] without copying when every problem takes part (rows are sorted, unique)."""
        return M if len(rows) == len(M) else M[rows]

    def _pad(self, v, rows):
        if len(rows) == self.W.shape[0]:
            return v
        full = v.new_zeros((self.W.shape[0], *v.shape[1:]))
        full[rows] = v
        return full

    def _mark_stalled(self, rows, x_before):
        """A problem whose whole step did not move sits at a fixed point of LBFGS: done."""
        still = self.state.status[rows] == RUNNING
        unmoved = (self.state.x[rows] == x_before).all(dim=1)
        self.state.status[rows[still & unmoved]] = STALLED


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
