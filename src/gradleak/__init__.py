"""gradleak: gradient leakage (DLG) attacks and defenses, as a reproducible pipeline.

The packages follow one job's data flow (docs/architecture.md has the full map):

- `victim`: the private data, the victim model, the defenses, the shared gradient and the
  defended (federated) training that the attacker intercepts;
- `engine`: the attacker: many reconstruction problems optimized together, the label
  rules, reconstruction quality, and the published DLG loop as the baseline;
- `jobs`: running it: the config schema, preflight checks, one job, sweeps, MLflow
  tracking and the files a job leaves;
- `report`: the study's answer from the collected CSVs: statistics, the paper's claims,
  figures (no torch).
"""
from pathlib import Path

from omegaconf import OmegaConf


def project_root() -> Path:
    """The repository root when running from a checkout (editable install), else the cwd."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "run.py").exists() else Path.cwd()


if not OmegaConf.has_resolver("project_root"):
    OmegaConf.register_new_resolver("project_root", lambda: str(project_root()))
