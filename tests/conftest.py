import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """`-m fast` replaces addopts' `-m 'not slow'`, so a test marked both would run in the fast tier."""
    both = [item.nodeid for item in items if item.get_closest_marker("fast") and item.get_closest_marker("slow")]
    if both:
        raise pytest.UsageError(f"a test is either fast or slow, not both: {', '.join(both)}")


def _shared_data() -> Path | None:
    path = Path(os.environ.get("GRADLEAK_TEST_DATA", ROOT.parent / "shared" / "data"))
    return path if (path / "MNIST" / "raw").is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real datasets (../shared/data or GRADLEAK_TEST_DATA)."""
    path = _shared_data()
    if path is None:
        if os.environ.get("GRADLEAK_REQUIRE_TEST_DATA") == "1":
            pytest.fail("GRADLEAK_REQUIRE_TEST_DATA=1 but ../shared/data (or GRADLEAK_TEST_DATA) is missing")
        pytest.skip("real test data not found at ../shared/data (set GRADLEAK_TEST_DATA)")
    return path


@pytest.fixture
def run_py(tmp_path):
    """Run `python run.py ...` in a subprocess with its own MLflow database and outputs."""
    import subprocess

    def run(*args, env=None, timeout=600):
        environ = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
                   "GRADLEAK_THREADS": "1", **(env or {})}
        cmd = [sys.executable, str(ROOT / "run.py"), *args,
               f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"]
        return subprocess.run(cmd, cwd=tmp_path, env=environ, capture_output=True, text=True,
                              timeout=timeout)

    run.dir = tmp_path
    return run



# --- scaling out (tests/test_scaling.py) ------------------------------------------------------
import glob  # noqa: E402 - kept with the fixtures that use them
import pwd  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402


def postgres_bin() -> Path | None:
    """The folder of initdb/pg_ctl: on PATH, or where Debian's postgresql package puts them."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    return next((c for c in candidates if (c / "initdb").exists() and (c / "pg_ctl").exists()), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def world_readable_tmp() -> Path:
    """A temp folder other users can enter (pytest's tmp_path is root-only when run as root)."""
    path = Path(tempfile.mkdtemp(prefix="gradleak-test-"))
    path.chmod(0o755)
    return path


def _as_postgres():
    """preexec_fn for PostgreSQL's tools: initdb and postgres refuse to run as root."""
    if os.geteuid() != 0:
        return None
    user = pwd.getpwnam("postgres")

    def drop():
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    return drop


def _start_postgres(bin_dir: Path, base: Path) -> int:
    """A throwaway cluster in base/data (no fsync: test data) with a database `mlflow`."""
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
    port = free_port()
    pg = {"preexec_fn": _as_postgres(), "check": True, "capture_output": True, "timeout": 120}
    subprocess.run([bin_dir / "initdb", "-D", base / "data", "-U", "gradleak", "-A", "trust", "--no-sync"], **pg)
    options = (f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
               " -c synchronous_commit=off -c full_page_writes=off")
    subprocess.run([bin_dir / "pg_ctl", "-D", base / "data", "-l", base / "postgres.log", "-w", "-o", options,
                    "start"], **pg)
    subprocess.run([bin_dir / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "gradleak", "mlflow"], **pg)
    return port


def _wait_for(uri: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)


CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
# docs/scaling.md's auth config: nobody reads without a login; the admin password comes from
# MLFLOW_AUTH_ADMIN_PASSWORD on the first start.
AUTH_INI = """[mlflow]
default_permission = READ
database_uri = sqlite:///{database}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
"""


@pytest.fixture(scope="module")
def mlflow_server():
    """A real MLflow tracking server (serving artifacts) on a real PostgreSQL, both started
    here on free ports, behind MLflow's basic-auth app, as docs/scaling.md says; yields the
    server's http:// URI, with the admin's credentials in MLFLOW_TRACKING_USERNAME /
    MLFLOW_TRACKING_PASSWORD for the module's tests (and the jobs they launch)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        reason = "PostgreSQL binaries (initdb, pg_ctl) not found; install Debian's postgresql package"
        if os.environ.get("GRADLEAK_REQUIRE_TEST_DATA") == "1":
            pytest.fail(f"GRADLEAK_REQUIRE_TEST_DATA=1 but {reason} (.ci/run installs it)")
        pytest.skip(reason)
    base = world_readable_tmp()
    server = None
    try:
        pg_port, port = _start_postgres(bin_dir, base), free_port()
        log = base / "mlflow-server.log"
        auth = base / "auth.ini"
        auth.write_text(AUTH_INI.format(database=base / "auth.db"))
        password = secrets.token_urlsafe(16)
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"postgresql+psycopg2://gradleak@127.0.0.1:{pg_port}/mlflow",
             "--artifacts-destination", str(base / "artifacts"), "--app-name", "basic-auth"],
            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # no job-runner processes
                 "MLFLOW_AUTH_CONFIG_PATH": str(auth), "MLFLOW_AUTH_ADMIN_PASSWORD": password,
                 "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_urlsafe(32)})  # the auth app's CSRF key
        _wait_for(f"http://127.0.0.1:{port}", server, log)
        saved = {k: os.environ.get(k) for k in CREDENTIALS}
        os.environ.update(dict(zip(CREDENTIALS, ("admin", password))))
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    finally:
        if server is not None:
            os.killpg(server.pid, 9)  # the server and its uvicorn worker (its session); test data only
            server.wait(timeout=30)
        if (base / "data").exists():
            subprocess.run([bin_dir / "pg_ctl", "-D", base / "data", "-m", "immediate", "stop"],
                           preexec_fn=_as_postgres(), capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def open_tmp():
    """world_readable_tmp(), removed afterwards."""
    path = world_readable_tmp()
    yield path
    shutil.rmtree(path, ignore_errors=True)
