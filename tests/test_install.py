"""The installed packages are the pinned ones (constraints.txt): the committed study's numbers
were made with these versions, and the README's MLflow UI instructions are MLflow's of that pin."""
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"


def pins() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    return {(r := Requirement(line)).name: str(r.specifier).removeprefix("==") for line in lines if line}


@pytest.mark.fast
def test_installed_versions_are_the_pinned_ones():
    pinned = pins()
    assert {"torch", "mlflow", "hydra-core", "pytorch-lightning", "dvc", "opacus"} <= set(pinned)
    wrong = {}
    for name, want in pinned.items():
        try:
            got = version(name)
        except PackageNotFoundError:  # a platform's own extras (e.g. CUDA wheels) may be absent
            continue
        if got != want:
            wrong[name] = f"{got} installed, {want} pinned"
    assert not wrong, f"reinstall with: pip install -e \".[dev]\" -c constraints.txt ({wrong})"
