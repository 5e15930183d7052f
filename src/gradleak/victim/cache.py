"""Results cached as files named by a hash of what determines them: JSON (training
results) or torch files (an intercepted round's tensors).

Parallel sweep jobs that need the same result take a file lock, so the first computes it
and the others wait and read it instead of computing it again.
"""
import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch


def content_hash(what: dict) -> str:
    """A short stable hash of a JSON-serializable description."""
    text = json.dumps(what, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_json(folder: Path, key: str, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """(result, was_cached): `folder/key.json` if present, else compute() stored there."""
    return _cached(Path(folder) / f"{key}.json", compute, lambda r, path: path.write_text(json.dumps(r, indent=1)),
                   lambda path: json.loads(path.read_text()))


def cached_tensors(folder: Path, key: str, compute: Callable[[], dict]) -> tuple[dict, bool]:
    """(result, was_cached) for a dict of tensors: `folder/key.pt`, as cached_json."""
    return _cached(Path(folder) / f"{key}.pt", compute, torch.save, lambda path: torch.load(path, weights_only=True))


def _cached(path: Path, compute, write, read):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if path.exists():
            return read(path), True
        result = compute()
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        write(result, tmp)
        os.replace(tmp, path)  # readers never see a half-written file
        return result, False
