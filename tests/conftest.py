import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real data (../shared/data or $GRADLEAK_TEST_DATA); CI requires it."""
    default = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    path = Path(os.environ.get("GRADLEAK_TEST_DATA", default))
    if not path.is_dir():
        message = f"shared real data not found at {path} (set GRADLEAK_TEST_DATA)"
        if os.environ.get("GRADLEAK_REQUIRE_TEST_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path
