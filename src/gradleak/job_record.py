"""What one job records in its metrics.json: one typed record, written by the job
(jobs/job.py) and read by the report (report/collect.py), the sweep's review on MLflow
(report/sweep_review.py) and the terminal summary (jobs/terminal.py).

VERSION names the layout. A record of another version is refused in one line (regenerate it
with this code: rerun the job, or `dvc repro`); records written before the field existed
have version 1's layout and read as version 1. Torch-free: the report reads it too.
"""
import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

VERSION = 1


class RecordError(ValueError):
    """A metrics.json this code cannot read: another version, or keys it does not know."""


@dataclass
class JobRecord:
    overrides: list[str]             # the job's overrides, where and how it ran left out (job_keys)
    config: dict[str, Any]           # the resolved config, flat (the MLflow run's params)
    attacker: str                    # engine/schema.py:attacker_name ("dlg", "ig", "dlg adaptive")
    defense: dict[str, Any]          # the defense setting's names (victim/defenses: setting_of)
    mlflow: dict[str, Any]           # tracking URI, experiment, run and parent run ids
    device: str                      # where the attack ran
    attack: dict[str, Any]           # the attack's summary: both verdicts, MSE, PSNR, SSIM, stops
    targets: list[dict[str, Any]]    # one entry per target: index, verdicts, quality, stop reason
    curve: dict[str, list]           # per step of the attack: evals, loss, MSE and exact-rate medians
    snapshots: dict[str, Any]        # {"file": snapshots.npz, "steps": the snapshot steps}
    grid: str                        # the reconstruction grid's file name
    thresholds: dict[str, Any] = field(default_factory=dict)  # how the verdicts move with a threshold
    train: dict[str, Any] | None = None  # the defended training's result (victim/training.py), if any
    version: int = VERSION

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON data, non-finite floats as None (strict JSON readers reject NaN)."""
        return _finite(asdict(self))

    def write(self, path: Path) -> Path:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1))
        return Path(path)

    @classmethod
    def read(cls, path: Path) -> "JobRecord":
        return cls.from_json(Path(path).read_text(), str(path))

    @classmethod
    def from_json(cls, text: str, where: str) -> "JobRecord":
        return cls.from_dict(json.loads(text), where)

    @classmethod
    def from_dict(cls, data: dict, where: str) -> "JobRecord":
        version = data.setdefault("version", 1)
        if version != VERSION:
            raise RecordError(f"{where}: a job record of version {version}; this code reads version {VERSION} "
                              "(rerun the job, or dvc repro)")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - names)
        missing = sorted(f.name for f in fields(cls) if f.name not in data and _required(f))
        if unknown or missing:
            raise RecordError(f"{where}: not a version {VERSION} job record"
                              + (f"; unknown keys {unknown}" if unknown else "")
                              + (f"; missing keys {missing}" if missing else ""))
        return cls(**data)


def _required(f) -> bool:
    return f.default is MISSING and f.default_factory is MISSING


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
