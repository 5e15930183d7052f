"""The one list of config keys that say where and how a job runs, not what it computes.

They stay out of a job's config hash (resume and the gate compare what jobs compute), of its
MLflow run name and of the setting the report pools seeds by. Imported by jobs/ and report/
alike (no torch, no MLflow)."""
import re

RUN_KEYS = ("tracking", "hydra", "threads", "resume", "data_dir")


def key_of(override: str) -> str:
    """`+a.b=1` -> `a.b`."""
    return override.split("=", 1)[0].lstrip("+~")


def defines_job(override: str) -> bool:
    """False for an override of a RUN_KEYS key or below one (tracking.uri=..., hydra/launcher=...)."""
    return re.split(r"[./]", key_of(override))[0] not in RUN_KEYS
