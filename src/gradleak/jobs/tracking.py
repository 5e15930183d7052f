"""MLflow tracking: one run per job, one parent run per sweep, created in the right process.

The database, the experiment and a sweep's parent run are created once, by the launching
process (gradleak.jobs.sweeps.SweepTracking, a Hydra callback), before any job starts: parallel
first writers to a fresh SQLite database crash or land in "Default". Jobs find the parent
through the GRADLEAK_PARENT_RUN_ID environment variable, read by `tracking.parent_run_id`
(launchers hand the launching process's environment on: joblib and submitit workers, sbatch).

A job's run ends FINISHED, FAILED (with the error as a tag) or KILLED (Ctrl-C, SIGTERM),
never RUNNING; it carries `config_hash`, the identity resume matches on.
"""
import hashlib
import json
import os
import signal
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from gradleak import project_root
from gradleak.job_keys import RUN_KEYS

PARENT_ENV = "GRADLEAK_PARENT_RUN_ID"
SWEPT_ENV = "GRADLEAK_SWEPT"  # the keys the launching multirun sweeps, comma-separated
PARENT_TAG = "mlflow.parentRunId"
HASH_TAG = "config_hash"
SKIPPED_TAG = "skipped.job"  # + job number, on a sweep's parent: the FINISHED run that stands in
JOB_TAG = "job"  # a child's job number in its sweep
# The UI opens an experiment of this kind in its model-training view (runs, charts, images).
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"
# For tests of failure isolation only: the job whose run name (its overrides) equals this
# value raises right after its run starts, as a real fault inside a job would.
FAULT_ENV = "GRADLEAK_FAULT_JOB"


def tracking_uri(cfg: DictConfig) -> str:
    return cfg.tracking.uri or f"sqlite:///{project_root() / 'mlflow.db'}"


def ui_command(uri: str) -> str:
    return f"mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else uri


def run_url(uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the UI (`mlflow ui`'s default address for a local store). The
    workflowType parameter opens the model-training view: MLflow 3.17's UI keeps a GenAI /
    Model training switch per browser, GenAI at first, and goes by it over the experiment's kind."""
    base = "http://127.0.0.1:5000" if uri.startswith(("sqlite", "file", "/")) else uri.rstrip("/")
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The experiment's id, created if missing, and of the model-training kind (the UI opens
    an experiment without a kind in its GenAI tracing view)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        _ensure_kind(client, found)
        return found.experiment_id
    location = None
    uri = client.tracking_uri
    if uri.startswith("sqlite:///"):  # keep artifacts beside the database, not in the cwd
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts" / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags={KIND_TAG: KIND})
    except MlflowException as exc:  # another process created it first: use theirs
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


def _ensure_kind(client: MlflowClient, experiment) -> None:
    """Tag an existing experiment as model training unless someone chose a kind for it (the
    UI itself stores a guess, `*_inferred`, which is replaced)."""
    kind = experiment.tags.get(KIND_TAG, "")
    if kind != KIND and (not kind or kind.endswith("_inferred") or kind == "no_inferred_type"):
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, KIND)


def ping(uri: str, experiment: str, timeout_s: int) -> None:
    """One request to the tracking server, without MLflow's retries (minutes of backoff), so
    that an unreachable server raises within about `timeout_s`."""
    with environ(MLFLOW_HTTP_REQUEST_TIMEOUT=str(timeout_s), MLFLOW_HTTP_REQUEST_MAX_RETRIES="0"):
        MlflowClient(uri).get_experiment_by_name(experiment)


@contextmanager
def environ(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key)
            else:
                os.environ[key] = value


def search(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    """Every run of the experiment that matches (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000, page_token=token)
        runs += page
        token = page.token
        if not token:
            return runs


def hashed_config(cfg: DictConfig) -> dict:
    """The resolved config without the RUN_KEYS (what a job computes)."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for key in RUN_KEYS:
        data.pop(key, None)
    if isinstance(data.get("dataset"), dict):
        data["dataset"].pop("data_dir", None)
    return data


def config_hash(cfg: DictConfig) -> str:
    """A stable id of what a job computes: its resolved config without the RUN_KEYS."""
    data = hashed_config(cfg)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def finished_run(cfg: DictConfig) -> str | None:
    """For resume: the id of a FINISHED run of this job's config, if any. Earlier attempts
    left RUNNING are marked KILLED first: resume means their process is gone."""
    client = MlflowClient(tracking_uri(cfg))
    experiment_id = ensure_experiment(client, cfg.tracking.experiment)
    same = search(client, experiment_id, f"tags.{HASH_TAG} = '{config_hash(cfg)}'")
    for run in same:
        _end_stale(client, run, cfg.tracking.parent_run_id)
    return next((r.info.run_id for r in same if r.info.status == "FINISHED"), None)


def _end_stale(client: MlflowClient, run, current_parent: str | None) -> None:
    """A RUNNING run of an earlier sweep (or run) ends KILLED, and so does its parent if it
    is still RUNNING; runs of the current sweep are left alone."""
    parent = run.data.tags.get(PARENT_TAG)
    if run.info.status != "RUNNING" or (current_parent and parent == current_parent):
        return
    for run_id in filter(None, (run.info.run_id, parent)):
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "KILLED")


def raise_on_sigterm() -> None:
    """Make SIGTERM raise SystemExit, as Ctrl-C raises KeyboardInterrupt, so that the code
    ending runs KILLED gets to run (Python's default dies on the spot). Only the main thread
    receives signals; other threads keep what they have."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum, frame):
    signal.signal(signal.SIGALRM, _exit_on_sigterm)
    if _in_database(frame):
        # Never inside a database call: a SystemExit there kept MLflow's transaction open, and
        # SQLite's write lock held, until the exception was garbage; ending the run KILLED then
        # failed ("database is locked", after 20+ s) and that error replaced the SystemExit (a
        # sweep took it for a failed job and went on). Look again in 50 ms: the SIGTERM is
        # delivered once the call has returned.
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        return
    # Raised while the main thread runs a __del__ or a weakref callback, the exception is
    # printed and dropped (seen in a test): raise it again each second until sigterm_handled().
    signal.setitimer(signal.ITIMER_REAL, 1.0)
    raise SystemExit(128 + signal.SIGTERM)


def _in_database(frame) -> bool:
    """Whether the interrupted stack is in SQLAlchemy, sqlite3 or one of MLflow's SQL stores
    (not its REST store: a request to a server may retry for minutes, and is safe to cut)."""
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if "sqlalchemy" in name or name.startswith(("sqlite3", "alembic", "mlflow.store.db")):
            return True
        frame = frame.f_back
    return False


def sigterm_handled() -> None:
    """Called where the SystemExit ends runs: no more raising it again."""
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=project_root(),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class JobRun:
    """The MLflow run of one job."""

    def __init__(self, client: MlflowClient, run_id: str, experiment: str, experiment_id: str):
        self.client, self.run_id, self.experiment, self.experiment_id = client, run_id, experiment, experiment_id

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

    def log_table(self, data: dict[str, list], artifact_file: str) -> None:
        """Columns as an MLflow table artifact (the UI's artifact view shows it as a table)."""
        self.client.log_table(self.run_id, data=data, artifact_file=artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_image(self, key: str, image, step: int) -> None:
        """One image of a step series: the UI's image panel shows `key` with a step slider."""
        self.client.log_image(self.run_id, image, key=key, step=step)

    def log_input(self, dataset, context: str) -> None:
        """What the run used, as an MLflow dataset (the runs table's Dataset column)."""
        from mlflow.entities import DatasetInput, InputTag
        from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

        entry = DatasetInput(dataset._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
        try:
            self.client.log_inputs(self.run_id, datasets=[entry])
        except MlflowException:
            # Parallel jobs of one seed attack the same images: when another job's insert of
            # the same dataset lands between the store's lookup and ours, ours violates the
            # unique key. Once more finds theirs and links it; any other error raises again.
            self.client.log_inputs(self.run_id, datasets=[entry])

    def lightning_logger(self):
        """A Lightning MLFlowLogger writing into this run (the job ends the run, not Lightning)."""
        from pytorch_lightning.loggers import MLFlowLogger

        class _SharedRunLogger(MLFlowLogger):
            def finalize(self, status: str = "success") -> None:
                pass

        return _SharedRunLogger(experiment_name=self.experiment, tracking_uri=self.uri, run_id=self.run_id)


PRIVACY_METRICS = ("epsilon", "delta", "sample_rate", "steps", "noise_multiplier")


def log_training(mlrun, result: dict) -> None:
    """What a defended training cost (its per-epoch train/* curves went through Lightning)."""
    mlrun.log_metrics({"utility_drop": result["utility_drop"], "train/wall_s": result["wall_s"],
                       "train/baseline_test_acc": result["baseline_test_acc"]})
    if "epsilon" in result:  # DP-SGD's guarantee (train.accountant is a param); None without noise
        mlrun.log_metrics({f"train/{k}": result[k] for k in PRIVACY_METRICS})


@contextmanager
def job_run(cfg: DictConfig, run_name: str, tags: dict):
    """Create this job's run (a child of the sweep's parent, if any); end it FINISHED,
    FAILED (with the error as a tag) or KILLED (Ctrl-C / SIGTERM), never RUNNING."""
    raise_on_sigterm()
    client = MlflowClient(tracking_uri(cfg))
    experiment_id = ensure_experiment(client, cfg.tracking.experiment)
    tags = {**tags, "git_commit": git_commit(), HASH_TAG: config_hash(cfg)}
    if cfg.tracking.parent_run_id:
        tags[PARENT_TAG] = cfg.tracking.parent_run_id
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    handle = JobRun(client, run.info.run_id, cfg.tracking.experiment, experiment_id)
    try:
        if os.environ.get(FAULT_ENV) == run_name:
            raise RuntimeError(f"fault injected by {FAULT_ENV}={run_name}")
        yield handle
    except (KeyboardInterrupt, SystemExit):
        sigterm_handled()
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
    from gradleak.jobs.config import KNOBS  # the job's schema: torch, unneeded by launchers

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
