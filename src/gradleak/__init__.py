"""gradleak: gradient leakage (DLG) attacks and defenses, as a reproducible pipeline."""
from pathlib import Path

from omegaconf import OmegaConf


def project_root() -> Path:
    """The repository root when running from a checkout (editable install), else the cwd."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "run.py").exists() else Path.cwd()


if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(project_root()))
