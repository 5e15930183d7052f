"""Results cached as JSON files named by a hash of what determines them.

Parallel sweep jobs that need the same result take a file lock, so the first computes it
and the others wait and read it instead of computing it again.
"""
import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path


def content_hash(what: dict) -> str:
    """A short stable hash of a JSON-serializable description."""
    text = json.dumps(what, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_json(folder: Path, key: str, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """(result, was_cached): `folder/key.json` if present, else compute() stored there."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.json"
    with open(folder / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if path.exists():
            return json.loads(path.read_text()), True
        result = compute()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(result, indent=1))
        os.replace(tmp, path)  # readers never see a half-written file
        return result, False
