"""Scaling out: parallel and multi-process launchers, an MLflow server on PostgreSQL, resume,
failure isolation, determinism, and the bad-input matrix. Jobs are tiny: the sweep
machinery is under test, not the attack."""
import csv
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, free_port
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from gradleak.jobs.preflight import preflight, preflight_or_exit
from gradleak.jobs.tracking import HASH_TAG, JOB_TAG, PARENT_TAG, config_hash

CONF = ROOT / "conf"
TINY = ["attack.num_targets=1", "attack.steps=5"]
SIX = ["seed=0,1,2", "defense=none,prune"]
JOBLIB = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]


def job_env(**extra: str) -> dict:
    """Child processes import this checkout's gradleak, whatever is installed."""
    path = os.pathsep.join([str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])
    environ = {**os.environ, "PYTHONPATH": path, "GRADLEAK_THREADS": "1", **extra}
    environ.pop("GRADLEAK_PARENT_RUN_ID", None)
    return environ


def launch(out: Path, *args: str, uri: str, env: dict | None = None, wait: bool = True):
    """`python run.py -m args` into `out`, tracked at `uri` in experiment 'scale'; its output
    goes to files (a pipe nobody reads would block it)."""
    environ = job_env(**(env or {}))
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *args, f"tracking.uri={uri}",
           "tracking.experiment=scale", f"hydra.sweep.dir={out}"]
    logs = [out.with_name(f"{out.name}.{x}") for x in ("stdout", "stderr")]
    with logs[0].open("w") as stdout, logs[1].open("w") as stderr:
        proc = subprocess.Popen(cmd, cwd=out.parent, env=environ, stdout=stdout, stderr=stderr)
    if not wait:
        return proc
    proc.wait(timeout=600)
    return subprocess.CompletedProcess(cmd, proc.returncode, *(log.read_text() for log in logs))


def runs(uri: str, experiment: str = "scale") -> list:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], max_results=1000)


def summary_rows(uri: str, parent) -> list[dict]:
    """The rows of the parent run's children.csv (sweep_review)."""
    with open(MlflowClient(uri).download_artifacts(parent.info.run_id, "children.csv")) as f:
        return list(csv.DictReader(f))


def split(all_runs: list) -> tuple[list, list]:
    parents = [r for r in all_runs if PARENT_TAG not in r.data.tags]
    return parents, [r for r in all_runs if PARENT_TAG in r.data.tags]


def assert_one_clean_sweep(uri: str, jobs: int) -> None:
    """One FINISHED parent with `jobs` FINISHED children, one per config, and no other run
    in any experiment ("Default" included)."""
    parents, children = split(runs(uri))
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert {c.data.tags[PARENT_TAG] for c in children} == {parents[0].info.run_id}
    assert [c.info.status for c in children] == ["FINISHED"] * jobs
    assert len({c.data.tags[HASH_TAG] for c in children}) == jobs
    client = MlflowClient(uri)
    everywhere = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert len(everywhere) == jobs + 1 and runs(uri, "Default") == []


def results(out: Path) -> dict:
    """What each job computed (timings left out), by its overrides."""
    found = {}
    for path in out.glob("*/metrics.json"):
        m = json.loads(path.read_text())
        attack = {k: v for k, v in m["attack"].items() if k != "wall_s"}
        found[" ".join(sorted(m["overrides"]))] = (attack, m["targets"], m["curve"])
    return found


# --- launchers ------------------------------------------------------------------------------

def test_joblib_sweep_on_a_fresh_sqlite_database_three_times_loses_nothing(tmp_path):
    computed = []
    for attempt in range(3):
        out, uri = tmp_path / f"sweep{attempt}", f"sqlite:///{tmp_path}/mlflow{attempt}.db"
        done = launch(out, *SIX, *TINY, *JOBLIB, uri=uri)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "sweep: 6 jobs: 6 finished, 0 failed, 0 skipped" in done.stdout
        assert_one_clean_sweep(uri, 6)
        computed.append(results(out))
    # Determinism: the same config and seed on CPU compute identical metrics in every attempt.
    assert len(computed[0]) == 6
    assert computed[0] == computed[1] == computed[2]


def test_joblib_sweep_against_an_mlflow_server_on_postgresql(tmp_path, mlflow_server):
    done = launch(tmp_path / "sweep", *SIX, *TINY, *JOBLIB, uri=mlflow_server)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep: 6 jobs: 6 finished, 0 failed, 0 skipped" in done.stdout
    assert_one_clean_sweep(mlflow_server, 6)
    child = split(runs(mlflow_server))[1][0]  # artifacts went through the server
    names = {a.path for a in MlflowClient(mlflow_server).list_artifacts(child.info.run_id)}
    assert {"metrics.json", "reconstruction.png", "config.yaml"} <= names


def test_the_tracking_server_lets_no_one_in_without_a_login(tmp_path, mlflow_server, monkeypatch):
    """docs/scaling.md's server runs MLflow's basic-auth app: no credentials, no runs (they
    hold reconstructions of private images); a wrong password stops a sweep in preflight."""
    from mlflow.exceptions import MlflowException

    wrong = launch(tmp_path / "sweep", "seed=0,1", *TINY, uri=mlflow_server,
                   env={"MLFLOW_TRACKING_PASSWORD": "not-the-password"})
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == (f"error: tracking.uri={mlflow_server}: the tracking server refused the login; "
                                    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (docs/scaling.md)")
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(MlflowException, match="401"):
        MlflowClient(mlflow_server).search_experiments()


def test_submitit_local_sweep(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = launch(tmp_path / "sweep", "seed=0,1", *TINY, "hydra/launcher=submitit_local", uri=uri)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep: 2 jobs: 2 finished, 0 failed, 0 skipped" in done.stdout
    assert_one_clean_sweep(uri, 2)


def composed_hash(*overrides: str) -> str:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return config_hash(compose(config_name="config", overrides=list(overrides)))


@pytest.mark.fast
def test_config_hash_is_what_a_job_computes_not_where_or_how_fast():
    base = composed_hash()
    assert composed_hash("threads=2", "data_dir=/elsewhere", "resume=true", "tracking.uri=http://x:5000",
                         "tracking.experiment=other") == base
    assert len({base, composed_hash("seed=1"), composed_hash("defense=prune"), composed_hash("attack.steps=7")}) == 4


# --- failure isolation, resume, signals --------------------------------------------------------

def test_a_failing_job_is_recorded_and_the_sweep_goes_on(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    failing = "seed=1 " + " ".join(TINY)  # run names are the job's overrides
    done = launch(tmp_path / "sweep", "seed=0,1,2", *TINY, uri=uri, env={"GRADLEAK_FAULT_JOB": failing})
    assert done.returncode == 1
    assert "sweep: 3 jobs: 2 finished, 1 failed, 0 skipped" in done.stdout
    assert f"failed: {failing}: RuntimeError: fault injected by GRADLEAK_FAULT_JOB" in done.stdout
    parents, children = split(runs(uri))
    status = {c.info.run_name: c.info.status for c in children}
    assert status == {"seed=0 " + " ".join(TINY): "FINISHED", failing: "FAILED",
                      "seed=2 " + " ".join(TINY): "FINISHED"}  # seed=2 ran after the failure
    error = next(c.data.tags["error"] for c in children if c.info.run_name == failing)
    assert error == f"RuntimeError: fault injected by GRADLEAK_FAULT_JOB={failing}"
    assert [p.info.status for p in parents] == ["FAILED"]
    assert len(list((tmp_path / "sweep").glob("*/metrics.json"))) == 2
    # the parent's table has every child, the failed one with its error
    table = summary_rows(uri, parents[0])
    assert [(r["overrides"], r["status"]) for r in table] == [("seed=0 " + " ".join(TINY), "FINISHED"),
                                                              (failing, "FAILED"), ("seed=2 " + " ".join(TINY),
                                                                                    "FINISHED")]
    assert table[1]["error"] == error and table[1]["exact"] == "" and table[0]["exact"] in ("0", "1")


CHILDREN = ("SELECT r.run_uuid, r.status, EXISTS (SELECT 1 FROM metrics m WHERE m.run_uuid = r.run_uuid)"
            f" FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = '{PARENT_TAG}'")


def child_states(db: Path) -> dict[str, tuple[str, bool]] | None:
    """{run id: (status, whether it has logged a metric)} of the sweep's children in the
    SQLite store; None while it cannot be read (not created yet, or locked by a writer)."""
    try:
        with sqlite3.connect(db, timeout=1) as con:
            return {run: (status, bool(measured)) for run, status, measured in con.execute(CHILDREN)}
    except sqlite3.OperationalError:
        return None


def _stopped(pid: int, timeout: float = 30) -> None:
    """Wait until every thread of `pid` is stopped (SIGSTOP is delivered asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = []
        for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
            try:
                states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
            except OSError:  # the thread is gone
                pass
        if all(state in "Tt" for state in states):
            return
        time.sleep(0.01)
    pytest.fail(f"process {pid} did not stop")


def freeze_while_a_job_runs(proc: subprocess.Popen, db: Path, finished: int = 2,
                            timeout: float = 300) -> dict[str, str]:
    """Stop the sweep's process (SIGSTOP) at a moment when at least `finished` children are
    FINISHED and one is RUNNING with work left (no metric logged yet: its attack has not
    ended), as read with the process stopped; returns that {run id: status}.

    Whatever the machine's load, a signal sent now finds exactly this state: the job seen
    running cannot finish (nor the next one start) between the look and the signal. A job
    that moved on between the poll and the stop is seen so; the process goes on (SIGCONT)
    and is caught later. The caller signals the stopped process (and sends SIGCONT)."""
    def caught(states):
        statuses = [status for status, _ in (states or {}).values()]
        running = [measured for status, measured in (states or {}).values() if status == "RUNNING"]
        return statuses.count("FINISHED") >= finished and running == [False]

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended (exit {proc.returncode}) before a job was caught running")
        if caught(child_states(db)):
            proc.send_signal(signal.SIGSTOP)
            _stopped(proc.pid)
            seen = child_states(db)  # None: stopped inside a write; let it go on
            if caught(seen):
                return {run: status for run, (status, _) in seen.items()}
            proc.send_signal(signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail(f"never saw {finished} finished jobs and one running")


@contextmanager
def reaped(proc: subprocess.Popen):
    """Whatever the test asserts, its sweep process does not outlive it (nor stay stopped)."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)


def job_of(run) -> int:
    return int(run.data.tags[JOB_TAG])


# Four short jobs (about a second of attack each: job 3's Adam converges in a few steps).
# Which job a signal finds running depends on the machine's load (under load, job 3 had
# finished before a signal sent right after seeing it run): the tests stop the sweep with a
# job running (freeze_while_a_job_runs) and check what follows from the state they read,
# not from how long a job takes.
FOUR_STEPS = (5, 6, 150, 7)
FOUR = ["attack.optimizer=adam", "attack.num_targets=1", "attack.steps=" + ",".join(map(str, FOUR_STEPS))]
FOUR_NAMES = [f"attack.steps={s} attack.optimizer=adam attack.num_targets=1" for s in FOUR_STEPS]  # swept first


def test_resume_after_sigkill_runs_exactly_the_missing_jobs(tmp_path):
    db, out = tmp_path / "mlflow.db", tmp_path / "sweep"
    uri = f"sqlite:///{db}"
    with reaped(launch(out, *FOUR, uri=uri, wait=False)) as first:
        seen = freeze_while_a_job_runs(first, db, finished=2)
        first.kill()  # SIGKILL during a job: no handler runs, its run stays RUNNING
        first.wait(timeout=60)
    before = {r.info.run_id: r for r in split(runs(uri))[1]}
    assert {i: r.info.status for i, r in before.items()} == seen
    done = {r.info.run_name for r in before.values() if r.info.status == "FINISHED"}
    (killed,) = (i for i, status in seen.items() if status == "RUNNING")

    again = launch(out, *FOUR, "resume=true", uri=uri)  # the same folder: results end up together
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"sweep: 4 jobs: {4 - len(done)} finished, 0 failed, {len(done)} skipped" in again.stdout
    parents, children = split(runs(uri))
    new = [c for c in children if c.info.run_id not in before]
    assert sorted(c.info.run_name for c in new) == sorted(set(FOUR_NAMES) - done)  # the killed job among them
    assert before[killed].info.run_name not in done
    assert {c.info.status for c in new} == {"FINISHED"}
    assert MlflowClient(uri).get_run(killed).info.status == "KILLED"
    assert sorted(p.info.status for p in parents) == ["FINISHED", "KILLED"]
    finished = [c.data.tags[HASH_TAG] for c in children if c.info.status == "FINISHED"]
    assert len(finished) == len(set(finished)) == 4
    assert len(results(out)) == 4  # one metrics.json per job, in one sweep folder


def test_sigterm_ends_the_running_job_and_the_sweep_killed(tmp_path):
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    with reaped(launch(tmp_path / "sweep", *FOUR, uri=uri, wait=False)) as proc:
        seen = freeze_while_a_job_runs(proc, db, finished=2)
        proc.send_signal(signal.SIGTERM)  # pending until the process goes on
        proc.send_signal(signal.SIGCONT)
        proc.wait(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM  # our handler's SystemExit, not the default death
    parents, children = split(runs(uri))
    # the jobs finished before the signal are FINISHED, the one running is KILLED, none RUNNING,
    # and no later job started
    assert {c.info.run_id: c.info.status for c in children} == \
        {i: "KILLED" if status == "RUNNING" else status for i, status in seen.items()}
    children.sort(key=job_of)
    done = len(children) - 1
    assert [job_of(c) for c in children] == list(range(done + 1))
    assert [c.info.status for c in children] == ["FINISHED"] * done + ["KILLED"]
    assert [p.info.status for p in parents] == ["KILLED"]
    tally = f"sweep: 4 jobs: {done} finished, 0 failed, 0 skipped, 1 killed"
    stderr = (tmp_path / "sweep.stderr").read_text()
    assert "sweep interrupted: its parent run and unfinished runs are KILLED" in stderr
    assert tally + (f", {3 - done} without a run" if done < 3 else "") + "\n" in stderr
    # the parent's table lists every child, what finished before the interruption included
    assert [(r["run_id"], r["status"]) for r in summary_rows(uri, parents[0])] == \
        [(c.info.run_id, c.info.status) for c in children]
    names = {a.path for a in MlflowClient(uri).list_artifacts(parents[0].info.run_id)}
    assert {"gallery.png", "verdicts.png"} <= names


@pytest.mark.fast
def test_sigterm_inside_a_database_write_ends_the_run_killed_once_the_write_is_done(tmp_path):
    """A SIGTERM that lands mid-transaction waits for the write: raised there, it kept SQLite
    locked, ending the run KILLED failed after ~25 s with an MlflowException instead of the
    SystemExit, and a sweep took that for a failed job and went on with the next one."""
    from omegaconf import OmegaConf
    from sqlalchemy import event

    from gradleak.jobs import tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = OmegaConf.create({"tracking": {"uri": uri, "experiment": "x", "parent_run_id": None}})
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGALRM)}

    def terminate(conn, cursor, statement, *args):
        if statement.startswith("INSERT INTO params"):  # the handler runs here, inside the write
            os.kill(os.getpid(), signal.SIGTERM)

    started = time.monotonic()
    try:
        with pytest.raises(SystemExit) as exited, tracking.job_run(cfg, "r", {}) as run:
            event.listen(run.client._tracking_client.store.engine, "after_cursor_execute", terminate)
            run.log_params({"a": 1, "b": 2})
            time.sleep(10)  # the SIGTERM ends this wait
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert exited.value.code == 128 + signal.SIGTERM
    assert time.monotonic() - started < 5
    ended = MlflowClient(uri).get_run(run.run_id)
    assert ended.info.status == "KILLED" and ended.data.params == {"a": "1", "b": "2"}  # the write went through


# --- bad input: one line, exit code 2, before any work ------------------------------------------

def fails_with(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        preflight_or_exit(argv, CONF)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("argv,message", [
    (["dataset=imagenet"], "dataset=imagenet: unknown option; allowed dataset=bible|cifar10|cifar100|digits|"),
    (["-m", "seed=0,1", "hydra/launcher=joblb"],
     "hydra/launcher=joblb: unknown option; allowed hydra/launcher=basic|joblib|submitit_local|submitit_slurm"),
    (["defense=none", "scale=1e-3"], "'scale' exists only with defense=noise, but defense=none is selected"),
    (["defense=prune", "ratio=1.5"], "ratio=1.5: allowed range is 0 <= ratio < 1"),
    (["resume=maybe"], "resume=maybe: allowed values are true, false"),
    (["dataset=npz", "path=/no/such/file.npz"], "dataset=npz path=/no/such/file.npz: no such file or folder"),
])
@pytest.mark.fast
def test_config_mistakes(argv, message, capsys):
    assert message in fails_with(argv, capsys)


def npz_bytes(tmp_path: Path) -> bytes:
    np.savez_compressed(tmp_path / "good.npz", x=np.zeros((10, 8, 8, 1), np.uint8), y=np.arange(10))
    return (tmp_path / "good.npz").read_bytes()


@pytest.mark.parametrize("content,message", [
    (lambda good: good[:200], "not an .npz archive (numpy.savez(path, x=..., y=...) writes one)"),  # truncated
    (lambda good: good[:-300] + bytes(300), "not an .npz archive ("),  # damaged end
    (lambda good: b"\x93NUMPY" + bytes(50), "not an .npz archive ("),  # a .npy, not an archive
    (None, "expected an .npz file"),
])
@pytest.mark.fast
def test_corrupt_dataset_files(content, message, tmp_path, capsys):
    path = tmp_path
    if content is not None:
        path = tmp_path / "data.npz"
        path.write_bytes(content(npz_bytes(tmp_path)))
    assert message in fails_with(["dataset=npz", f"path={path}"], capsys)


@pytest.mark.fast
def test_corrupt_image_in_an_image_folder(tmp_path, capsys):
    for i in range(5):  # the held-out (attacked) share draws from all of them
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "a" / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    err = fails_with(["dataset=imagefolder", f"path={tmp_path}", "attack.num_targets=1"], capsys)
    assert "dataset=imagefolder path=" in err and "cannot read image " in err
    assert "1.png (UnidentifiedImageError)" in err


class unprivileged:
    """Run as `nobody` inside the block when we are root, so that permission bits count."""

    def __enter__(self):
        self.root = os.geteuid() == 0
        if self.root:
            os.setegid(65534)
            os.seteuid(65534)

    def __exit__(self, *exc):
        if self.root:
            os.seteuid(0)
            os.setegid(0)


@pytest.mark.fast
def test_unreadable_dataset_file(open_tmp, capsys):
    data = open_tmp / "private.npz"
    np.savez(data, x=np.zeros((10, 8, 8, 1), np.uint8), y=np.arange(10))
    data.chmod(0)
    with unprivileged():
        err = fails_with(["dataset=npz", f"path={data}"], capsys)
    assert f"dataset=npz path={data}: not a readable .npz file ([Errno 13] Permission denied" in err


@pytest.mark.parametrize("argv,key", [
    (["hydra.run.dir={ro}/out"], "hydra.run.dir={ro}/out"),
    (["-m", "seed=0,1", "hydra.sweep.dir={ro}/out"], "hydra.sweep.dir={ro}/out"),
    (["hydra.run.dir={rw}/out", "tracking.uri=sqlite:///{ro}/mlflow.db"], "tracking.uri=sqlite:///{ro}/mlflow.db"),
])
@pytest.mark.fast
def test_read_only_output_or_database_folder(argv, key, open_tmp, capsys):
    ro, rw = open_tmp / "ro", open_tmp / "rw"
    ro.mkdir()
    ro.chmod(0o555)
    rw.mkdir()
    rw.chmod(0o777)
    with unprivileged():
        err = fails_with([a.format(ro=ro, rw=rw) for a in argv], capsys)
    assert err == f"error: {key.format(ro=ro)}: cannot write in {ro} (Permission denied); choose a writable folder\n"


def test_unreachable_tracking_server_is_one_line_within_30_s(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = subprocess.run([sys.executable, str(ROOT / "run.py"), f"tracking.uri={uri}"], cwd=tmp_path,
                          env=job_env(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: tracking.uri={uri}: no MLflow tracking server answered (connection refused);"
        " start it (README: Scaling out) or fix tracking.uri")
    assert not list(tmp_path.iterdir())  # no outputs, no database: no work started


@pytest.mark.fast
def test_silent_tracking_server_times_out(capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with __import__("socket").socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        err = fails_with([f"tracking.uri={uri}"], capsys)
    assert time.monotonic() - started < 30
    assert f"tracking.uri={uri}: no MLflow tracking server answered (nothing within 2 s)" in err


def readme_commands(start: str) -> list[list[str]]:
    """The arguments of every command that starts with `start` (continuation lines joined) in
    the README and docs/scaling.md, where its "Scaling out" points."""
    found = []
    for doc in ("README.md", "docs/scaling.md"):
        text = (ROOT / doc).read_text().replace("\\\n", " ")
        # the arguments after "python run.py"
        found += [shlex.split(line)[2:] for line in text.splitlines() if line.startswith(start)]
    assert found, f"no command starting with {start!r} in README.md or docs/scaling.md"
    return found


@pytest.mark.parametrize("start,jobs", [("python run.py -m hydra/launcher=joblib", 6),
                                        ("python run.py -m hydra/launcher=submitit_slurm", 24)])
def test_readme_sweep_commands_are_valid(start, jobs):
    """The documented commands compose: every launcher setting exists (no SLURM needed)."""
    for argv in readme_commands(start):
        assert preflight(argv, CONF) == jobs
