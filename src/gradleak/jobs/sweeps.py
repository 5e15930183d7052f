"""A sweep's life: its parent run, each job's guard (resume, failure isolation), the tally.

- The launching process creates the experiment and the parent run before any job starts
  (SweepTracking, a Hydra callback), whatever the launcher: basic, joblib, submitit.
- `resume=true`: a job whose config already has a FINISHED run is skipped (and noted on
  the parent run); killed or failed jobs run again.
- In a sweep, a job that raises has its run recorded FAILED (tracking.job_run) and the
  sweep goes on; at the end the launching process prints how many jobs finished, failed,
  were skipped or killed, and exits 1 unless all finished or were skipped.
"""
import atexit
import logging
import os
import sys
from dataclasses import dataclass, field

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from gradleak.job_keys import defines_job
from gradleak.jobs import tracking
from gradleak.jobs.hydra_cli import as_swept, expand_sweep, parse_overrides, sweeper_params

log = logging.getLogger(__name__)
SKIPPED_TAG = tracking.SKIPPED_TAG


def sweep_size(overrides: list[str]) -> int:
    """How many jobs `-m overrides` expands to (the basic sweeper's cartesian product)."""
    return len(expand_sweep(parse_overrides(as_swept(overrides))))


def swept_keys(overrides: list[str]) -> list[str]:
    """The keys a multirun sweeps over (a list of values), in the order they are written."""
    return [o.key_or_group for o in parse_overrides(overrides) if o.is_sweep_override()]


def run_guarded(task, cfg: DictConfig):
    """The Hydra task function around `task(cfg)`: resume, then failure isolation."""
    try:
        if cfg.resume and (done := tracking.finished_run(cfg)):
            _note_skipped(cfg, done)
            print(f"skipped (resume=true): run {done} already finished this config")
            return None
        return task(cfg)
    except Exception:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        # Its run is FAILED with the error as a tag; the traceback goes to the job's log.
        log.exception("job failed; the sweep goes on with the next job")
        return None


def _note_skipped(cfg: DictConfig, run_id: str) -> None:
    if cfg.tracking.parent_run_id:
        client = MlflowClient(tracking.tracking_uri(cfg))
        client.set_tag(cfg.tracking.parent_run_id, f"{SKIPPED_TAG}{HydraConfig.get().job.num}", run_id)


@dataclass
class Tally:
    expected: int
    finished: int = 0
    skipped: int = 0
    failed: list = field(default_factory=list)  # (run name, error)
    killed: list = field(default_factory=list)  # run names

    @property
    def missing(self) -> int:
        """Jobs without a run: they failed before creating it (their log says why), or an
        interrupted sweep never started them."""
        return max(0, self.expected - self.finished - self.skipped - len(self.failed) - len(self.killed))

    @property
    def ok(self) -> bool:
        """Every job finished or was skipped (a killed attempt that was retried is fine)."""
        return not self.failed and self.finished + self.skipped >= self.expected

    def lines(self) -> list[str]:
        parts = [f"{self.finished} finished", f"{len(self.failed)} failed", f"{self.skipped} skipped"]
        parts += [f"{len(self.killed)} killed"] if self.killed else []
        parts += [f"{self.missing} without a run"] if self.missing else []
        return ([f"sweep: {self.expected} jobs: " + ", ".join(parts)]
                + [f"  failed: {name}: {error}" for name, error in self.failed]
                + [f"  killed: {name}" for name in self.killed])


def close_sweep(client: MlflowClient, parent_id: str, expected: int, status: str | None = None) -> Tally:
    """Count the parent's children; children still RUNNING lost their process: KILLED.
    Puts what the sweep found on the parent (sweep_review: table, gallery, figure) and ends
    it with `status`, or FINISHED / FAILED from the tally."""
    parent = client.get_run(parent_id)
    tally = Tally(expected, skipped=sum(k.startswith(SKIPPED_TAG) for k in parent.data.tags))
    children = tracking.search(client, parent.info.experiment_id,
                               f"tags.`{tracking.PARENT_TAG}` = '{parent_id}'")
    for run in children:
        name, state = run.info.run_name, run.info.status
        if state == "RUNNING":
            client.set_terminated(run.info.run_id, "KILLED")
            state = "KILLED"
        if state == "FINISHED":
            tally.finished += 1
        elif state == "FAILED":
            tally.failed.append((name, run.data.tags.get("error", "no error recorded")))
        else:
            tally.killed.append(name)
    try:
        from gradleak.report import sweep_review  # matplotlib, scipy: only where a sweep ends

        sweep_review.review(client, parent_id)
    except Exception as exc:  # noqa: BLE001 - the summary is a convenience; the sweep must still end
        print(f"warning: no sweep summary on the parent run ({type(exc).__name__}: {exc})".splitlines()[0],
              file=sys.stderr)
    client.set_terminated(parent_id, status or ("FINISHED" if tally.ok else "FAILED"))
    return tally


class SweepTracking(Callback):
    """Hydra callback, in the launching process of a multirun."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            self._start(config)
        except Exception as exc:  # noqa: BLE001 - Hydra would only warn and run the jobs without a parent
            print(f"error: cannot create the sweep's parent run at {tracking.tracking_uri(config)}"
                  f" ({type(exc).__name__}: {exc})".splitlines()[0], file=sys.stderr)
            raise SystemExit(1) from None

    def _start(self, config: DictConfig) -> None:
        client = MlflowClient(tracking.tracking_uri(config))
        experiment_id = tracking.ensure_experiment(client, config.tracking.experiment)
        overrides = as_swept(sweeper_params(config) + list(config.hydra.overrides.task))
        named = [o for o in overrides if defines_job(o)]  # what, not where
        run = client.create_run(experiment_id, run_name=f"sweep {' '.join(named) or 'defaults'}",
                                tags={"sweep_dir": str(config.hydra.sweep.dir),
                                      "git_commit": tracking.git_commit()})
        os.environ[tracking.PARENT_ENV] = run.info.run_id
        os.environ[tracking.SWEPT_ENV] = ",".join(swept_keys(overrides))  # jobs lead their names with them
        self.client, self.run_id, self.jobs = client, run.info.run_id, sweep_size(overrides)
        self.experiment_id = experiment_id
        tracking.raise_on_sigterm()
        _OPEN.append(self)
        atexit.register(self._abandon)  # in case the process leaves without end_interrupted_sweep

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self._forget()
        tally = close_sweep(self.client, self.run_id, self.jobs)
        os.environ.pop(tracking.PARENT_ENV, None)
        os.environ.pop(tracking.SWEPT_ENV, None)
        url = tracking.run_url(self.client.tracking_uri, self.experiment_id, self.run_id)
        print("\n".join(tally.lines() + [f"mlflow: parent run {self.run_id} at {self.client.tracking_uri}",
                                          f"ui:     {url}"]))
        if not tally.ok:
            raise SystemExit(1)  # a Hydra callback's exceptions become warnings; this one must not

    def _abandon(self) -> None:
        """The launching process exits mid-sweep (Ctrl-C, SIGTERM, a launcher error): the
        sweep and the runs its workers left RUNNING end KILLED."""
        tracking.sigterm_handled()
        self._forget()
        tally = close_sweep(self.client, self.run_id, self.jobs, status="KILLED")
        print("\n".join(["sweep interrupted: its parent run and unfinished runs are KILLED", *tally.lines()]),
              file=sys.stderr)

    def _forget(self) -> None:
        atexit.unregister(self._abandon)
        if self in _OPEN:
            _OPEN.remove(self)


_OPEN: list[SweepTracking] = []  # the sweep this process has started and not yet ended


def end_interrupted_sweep() -> None:
    """run.py calls this however its Hydra main ends: a sweep still open was interrupted and
    ends KILLED here, before interpreter shutdown (atexit handlers run after thread pools
    stop taking work, and MLflow's artifact downloads, which the sweep review needs, use one)."""
    for sweep in list(_OPEN):
        sweep._abandon()
