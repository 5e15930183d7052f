import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


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
