"""MLflow tracking: one run per job, one parent run per sweep, created in the right process.

The database, the experiment and a sweep's parent run are created once, by the launching
process (SweepTracking, a Hydra callback), before any job starts: parallel first writers
to a fresh SQLite database crash or land in "Default". Jobs find the parent through the
GRADLEAK_PARENT_RUN_ID environment variable, read by `tracking.parent_run_id`.
"""
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

from hydra.experimental.callback import Callback
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from gradleak import project_root

PARENT_ENV = "GRADLEAK_PARENT_RUN_ID"


def tracking_uri(cfg: DictConfig) -> str:
    return cfg.tracking.uri or f"sqlite:///{project_root() / 'mlflow.db'}"


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else uri


def ensure_experiment(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    uri = client.tracking_uri
    if uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in the cwd
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / name).as_uri()
    return client.create_experiment(name, artifact_location=location)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project_root(),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class SweepTracking(Callback):
    """Hydra callback: in a multirun, create the experiment and the parent run first."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        client = MlflowClient(tracking_uri(config))
        experiment_id = ensure_experiment(client, config.tracking.experiment)
        sweep_dir = config.hydra.sweep.dir
        overrides = " ".join(config.hydra.overrides.task) or "defaults"
        run = client.create_run(experiment_id, run_name=f"sweep {overrides}",
                                tags={"sweep_dir": str(sweep_dir), "git_commit": git_commit()})
        os.environ[PARENT_ENV] = run.info.run_id
        self.client, self.run_id = client, run.info.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if getattr(self, "run_id", None):
            self.client.set_terminated(self.run_id, "FINISHED")
            os.environ.pop(PARENT_ENV, None)


class JobRun:
    """The MLflow run of one job."""

    def __init__(self, client: MlflowClient, run_id: str, experiment: str):
        self.client, self.run_id, self.experiment = client, run_id, experiment

    @property
    def uri(self) -> str:
        return self.client.tracking_uri

    def log_params(self, params: dict) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        self.log_series({k: [v] for k, v in metrics.items()}, steps=[step])

    def log_series(self, series: dict[str, list], steps: list[int]) -> None:
        """Step metrics (curves) in a few batched writes."""
        items = [Metric(k, float(v), 0, int(s)) for k, values in series.items()
                 for s, v in zip(steps, values) if v is not None]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def lightning_logger(self):
        """A Lightning MLFlowLogger writing into this run (the job ends the run, not Lightning)."""
        from pytorch_lightning.loggers import MLFlowLogger

        class _SharedRunLogger(MLFlowLogger):
            def finalize(self, status: str = "success") -> None:
                pass

        return _SharedRunLogger(experiment_name=self.experiment, tracking_uri=self.uri, run_id=self.run_id)


@contextmanager
def job_run(cfg: DictConfig, run_name: str, tags: dict):
    """Create this job's run (a child of the sweep's parent, if any); end it FINISHED,
    FAILED (with the error as a tag) or KILLED (Ctrl-C / SIGTERM), never RUNNING."""
    client = MlflowClient(tracking_uri(cfg))
    experiment_id = ensure_experiment(client, cfg.tracking.experiment)
    tags = {**tags, "git_commit": git_commit()}
    if cfg.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    handle = JobRun(client, run.info.run_id, cfg.tracking.experiment)
    try:
        yield handle
    except (KeyboardInterrupt, SystemExit):
        client.set_terminated(handle.run_id, "KILLED")
        raise
    except BaseException as exc:
        client.set_tag(handle.run_id, "error", f"{type(exc).__name__}: {exc}"[:5000])
        client.set_terminated(handle.run_id, "FAILED")
        raise
    client.set_terminated(handle.run_id, "FINISHED")


def flat_params(cfg: DictConfig) -> dict:
    """The resolved config as dotted keys (the top-level knob aliases are left out: they
    repeat defense.* and dataset.*)."""
    from gradleak.config import KNOBS

    container = OmegaConf.to_container(cfg, resolve=True)
    container = {k: v for k, v in container.items() if k not in KNOBS and k != "hydra"}
    out = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = node

    walk("", container)
    return out
