"""The batched L-BFGS is K independent torch.optim.LBFGS instances (float64, CPU)."""
import pytest
import torch
from omegaconf import OmegaConf

from gradleak.engine.optimizers import CONVERGED, DIVERGED, RUNNING, STOPPED, WAITING, BatchedLBFGS
from gradleak.engine.problems import DummyLayout, ProblemObjective
from gradleak.engine.published import reference_dlg
from gradleak.victim.data import load_split
from gradleak.victim.gradients import shared_gradients
from gradleak.victim.models import LeNet

K, STEPS, TOL = 8, 20, 1e-4
# Below this loss the objective (a sum of ~8,000 squared gradient differences) is at float64
# round-off: trajectories that reach it agree to ~1e-13 absolute, which is no longer 1e-4
# relative. Steps are compared while the reference is above it.
LOSS_FLOOR = 1e-6


@pytest.fixture(scope="module")
def problem():
    return make_problem()


def make_problem():
    """K real digits behind K gradients of the DLG LeNet, with DLG's random dummy init."""
    torch.manual_seed(0)
    test = load_split(OmegaConf.create({"name": "digits"}), "test")
    model = LeNet(1, 8, 10).double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    images = test.images[:K, None].double()
    labels = test.labels[:K, None]
    targets = shared_gradients(model, images, labels)
    layout = DummyLayout(1, (1, 8, 8), 10, with_labels=True)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.cat([torch.randn(K, 64, generator=gen, dtype=torch.float64),
                    torch.randn(K, 10, generator=gen, dtype=torch.float64)], dim=1)
    return model, layout, targets, x0


def batched_trajectory(model, layout, targets, x0, rows, **opts):
    objective = ProblemObjective(model, layout, [t[rows] for t in targets], None)
    opt = BatchedLBFGS(objective, x0[rows].clone(), **opts)
    return torch.stack([opt.step() for _ in range(STEPS)], dim=1), opt


def torch_trajectory(model, layout, targets, x0, k, history_size=100):
    """The original DLG loop: torch.optim.LBFGS(lr=1, history 100, max_iter 20)."""
    images, logits = layout.images(x0[k:k + 1])[0], layout.labels(x0[k:k + 1])[0]
    return reference_dlg(model, [t[k] for t in targets], images, logits, STEPS,
                         history_size=history_size)[2]


def rel_diff(a, b):
    above = b.abs() > LOSS_FLOOR
    assert above.sum() >= 3, "too few steps above the round-off floor to compare"
    return float(((a - b).abs() / b.abs())[above].max())


@pytest.mark.fast
def test_k1_follows_torch_lbfgs(problem):
    model, layout, targets, x0 = problem
    for k in range(3):
        ours, _ = batched_trajectory(model, layout, targets, x0, torch.tensor([k]))
        reference = torch_trajectory(model, layout, targets, x0, k)
        assert (reference[1:] != reference[0]).all()  # the reference really moved
        assert rel_diff(ours[0], reference) < TOL


def test_short_history_drops_oldest_pairs_like_torch(problem):
    """History 3: the oldest pair is dropped on almost every iteration. So short a memory
    makes the fixed-step trajectories chaotic (round-off differences grow ~100x per step),
    so the first 3 steps (60 iterations, ~20 wrap-arounds) are compared; they agree to
    ~1e-8 or better."""
    model, layout, targets, x0 = problem
    together, _ = batched_trajectory(model, layout, targets, x0, torch.arange(K), history_size=3)
    for k in range(K):
        reference = torch_trajectory(model, layout, targets, x0, k, history_size=3)
        assert rel_diff(together[k, :3], reference[:3]) < TOL


def test_each_of_k8_equals_its_own_k1_run(problem):
    model, layout, targets, x0 = problem
    together, _ = batched_trajectory(model, layout, targets, x0, torch.arange(K))
    for k in range(K):
        alone, _ = batched_trajectory(model, layout, targets, x0, torch.tensor([k]))
        assert rel_diff(together[k], alone[0]) < TOL


@pytest.mark.parametrize("poisoned", [[3], [0, 1, 2, 4, 5, 6]], ids=["one", "most"])
def test_diverging_problem_is_frozen_and_isolated(problem, poisoned):
    """One frozen problem (the others run on the all-problems path of the optimizer) or
    six (the two left run on the gathered few-problems path)."""
    model, layout, targets, x0 = problem
    rows = torch.arange(K)
    clean, _ = batched_trajectory(model, layout, targets, x0, rows)
    poisoned_targets = [t.clone() for t in targets]
    poisoned_x0 = x0.clone()
    poisoned_x0[poisoned, :64] = 1e6  # saturated sigmoids: a step from here explodes
    poisoned_targets[0][poisoned] = float("nan")
    traj, opt = batched_trajectory(model, layout, poisoned_targets, poisoned_x0, rows)
    assert (opt.state.status[poisoned] == DIVERGED).all()
    others = torch.tensor([k for k in range(K) if k not in poisoned])
    assert rel_diff(traj[others], clean[others]) < TOL
    assert (opt.state.status[others] != DIVERGED).all()
    assert torch.isfinite(opt.state.x).all()  # frozen at its last finite point


@pytest.mark.fast
def test_backtracking_never_increases_loss(problem):
    model, layout, targets, x0 = problem
    traj, opt = batched_trajectory(model, layout, targets, x0, torch.arange(K), line_search="backtracking")
    assert (traj[:, 1:] <= traj[:, :-1] * (1 + 1e-12)).all()
    assert (opt.state.status != DIVERGED).all()
    assert float(traj[:, -1].median()) < 1e-2 * float(traj[:, 0].median())


def test_frozen_problem_with_full_history_leaves_restarted_ones_alone(problem):
    """Problem 0 stops with a full, wrapped-around history while problems 1 and 2 restart
    from an empty one: their iterations (problem 0's history leaves the buffer they read)
    must equal a run of the two alone (first 3 steps, as above)."""
    model, layout, targets, x0 = problem
    rows = torch.arange(3)
    objective = ProblemObjective(model, layout, [t[rows] for t in targets], None)
    opt = BatchedLBFGS(objective, x0[rows].clone(), history_size=5)
    opt.step()
    assert opt.start[0] != 0 and opt.count[0] == 5  # full and wrapped around
    opt.state.status[0] = CONVERGED
    fresh = BatchedLBFGS(objective, opt.state.x.clone(), history_size=5)  # empty histories
    for name in ("W", "SY", "YY", "start", "count", "H_diag", "n_iter"):
        getattr(opt, name)[1:] = getattr(fresh, name)[1:]
    alone, _ = batched_trajectory(model, layout, targets, opt.state.x, torch.tensor([1, 2]), history_size=5)
    together = torch.stack([opt.step() for _ in range(STEPS)], dim=1)
    assert rel_diff(together[1:, :3], alone[:, :3]) < TOL  # short history: chaotic later on


def test_few_running_problems_drop_old_pairs_on_the_gathered_path(problem):
    """Six of 8 frozen at once, history 5: the two left wrap their histories on the
    few-problems path and must match their run among all 8 (first 3 steps, as above)."""
    model, layout, targets, x0 = problem
    rows, poisoned = torch.arange(K), [0, 1, 2, 4, 5, 6]
    clean, _ = batched_trajectory(model, layout, targets, x0, rows, history_size=5)
    poisoned_targets = [t.clone() for t in targets]
    poisoned_targets[0][poisoned] = float("nan")
    traj, opt = batched_trajectory(model, layout, poisoned_targets, x0, rows, history_size=5)
    assert (opt.state.status[poisoned] == DIVERGED).all()
    assert rel_diff(traj[[3, 7], :3], clean[[3, 7], :3]) < TOL


def test_a_problem_started_late_follows_its_run_alone(problem):
    """A restart that starts after the others built their histories (WAITING, then RUNNING)
    while another ends: the history buffer, which holds the running problems only, takes
    the late one in with an empty history and lets the ended one go. The late one steps as
    it does alone, the two that ran on step as in their run without the others."""
    model, layout, targets, x0 = problem
    objective = ProblemObjective(model, layout, [t[1:5] for t in targets], None)  # all take > 1 step
    opt = BatchedLBFGS(objective, x0[1:5].clone())
    opt.state.status[3] = WAITING
    early = 1
    for _ in range(early):
        opt.step()
    assert len(opt.W) == 3
    opt.state.status[0], opt.state.status[3] = STOPPED, RUNNING
    late = [opt.step()]
    assert len(opt.W) == 3  # problem 0 out, problem 3 in
    late = torch.stack(late + [opt.step() for _ in range(STEPS - 1)], dim=1)
    alone, _ = batched_trajectory(model, layout, targets, x0, torch.tensor([4]))
    assert rel_diff(late[3], alone[0]) < TOL
    first_three, _ = batched_trajectory(model, layout, targets, x0, torch.arange(1, 4))
    assert rel_diff(late[1:3, :STEPS - early], first_three[1:3, early:]) < TOL


@pytest.mark.parametrize("line_search", [None, "backtracking"])
def test_problems_ticked_out_of_step_follow_their_lockstep_trajectories(problem, line_search):
    """The attack's loop lets a problem that ended its step start the next while the others
    finish theirs (`tick`). Each problem must still take the steps it takes in lockstep
    (`step`), with the same evaluations, and every call carries every running problem."""
    model, layout, targets, x0 = problem
    calls = {"lockstep": 0, "ticked": 0}

    def counted(schedule):
        objective = ProblemObjective(model, layout, targets, None)

        def f(x, rows):
            calls[schedule] += 1
            return objective(x, rows)
        return BatchedLBFGS(f, x0.clone(), line_search=line_search)

    lockstep = counted("lockstep")
    together = torch.full((K, STEPS), float("nan"), dtype=torch.float64)  # loss after each own step
    for i in range(STEPS):
        running = lockstep.state.running.clone()
        lockstep.step()
        together[running, i] = lockstep.state.loss[running]
    ticked = counted("ticked")
    state, apart = ticked.state, torch.full_like(together, float("nan"))
    while state.running.any():
        ended = ticked.tick(state.running.nonzero().squeeze(1))
        apart[ended, state.steps[ended] - 1] = state.loss[ended]
        state.status[ended[state.steps[ended] == STEPS]] = STOPPED  # its own budget
    ended_own = lockstep.state.status != RUNNING  # by its own test: converged, stalled
    assert torch.equal(state.status[ended_own], lockstep.state.status[ended_own])
    assert (state.status[~ended_own] == STOPPED).all()
    assert torch.equal(state.evals, lockstep.state.evals) and torch.equal(apart.isnan(), together.isnan())
    taken = ~together.isnan()
    assert rel_diff(apart[taken], together[taken]) < TOL
    # every call carried every running problem: as many calls as the longest problem's evaluations
    assert calls["ticked"] == int(state.evals.max()) <= calls["lockstep"]
    if line_search is not None:  # trials make steps differ in length: lockstep waits on each
        assert calls["ticked"] < calls["lockstep"]


def test_every_iteration_gets_its_own_line_search_trials(problem):
    """lr 100: each iteration's Armijo search halves the step about 7 times (of max_ls 10)
    before it accepts. If trials carried over between iterations, the searches would give
    up within a few iterations and the problems stop at a fixed point."""
    model, layout, targets, x0 = problem
    objective = ProblemObjective(model, layout, targets, None)
    opt = BatchedLBFGS(objective, x0.clone(), line_search="backtracking", lr=100.0)
    first = opt.step()
    for _ in range(4):
        opt.step()
    assert int((opt.state.status == RUNNING).sum()) >= K - 2
    assert float(opt.n_iter.double().median()) >= 20
    assert opt.state.evals.sum() > 5 * opt.n_iter.sum()  # several trials per iteration
    assert (opt.state.loss < 0.1 * first).all()
