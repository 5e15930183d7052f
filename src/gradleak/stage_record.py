"""A sweep stage's record, kept in git (docs/records/<stage>/): what the report reads of the
stage's jobs, so that tables and figures are rebuilt from a clone alone and a reader can
recheck any per-target number. The raw job folders (results/sweeps/<stage>, and the MLflow
runs) stay a by-product of the sweep, outside git.

- jobs.jsonl: one line per job, in the sweep's folder order: {"job": its folder below the
  stage, "record": its metrics.json (job_record.JobRecord) as written};
- images.npz: the reconstructions the figures draw, for the jobs of the stage's lowest seed
  (the galleries and the reconstruction figure show that seed's draw: no cherry-picking):
  `<job>/truth` and `<job>/recon` of the first GALLERY_IMAGES images, `<job>/steps`; every
  snapshot where the stage's snapshots are drawn along the attack (ALL_FRAMES), else the
  final one.

Written without timestamps, so that a stage rerun with the same outcome leaves git clean.
`unpack` lays a record out as job folders again (metrics.json, snapshots.npz), the layout
the report collects. Torch-free.
"""
import io
import json
import zipfile
from pathlib import Path

import numpy as np

from gradleak.job_record import JobRecord

JOBS, IMAGES = "jobs.jsonl", "images.npz"
METRICS, SNAPSHOTS = "metrics.json", "snapshots.npz"
GALLERY_IMAGES = 8  # the galleries' columns (report/gallery.py)
ALL_FRAMES = {"datasets"}  # whose snapshots along the attack a figure draws (report/figures.py)
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the zip members' date: none of the run's


def job_folders(raw: Path) -> list[Path]:
    """The job folders of a stage's raw sweep output (those that wrote a metrics.json), sorted."""
    return sorted(p.parent for p in Path(raw).rglob(METRICS))


def write(raw: Path, out: Path, stage: str) -> tuple[int, int]:
    """The record of the jobs under `raw` (results/sweeps/<stage>) into `out`; returns
    (jobs, jobs with images)."""
    folders = job_folders(raw)
    entries = [(f.relative_to(raw).as_posix(), JobRecord.read(f / METRICS)) for f in folders]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / JOBS, "w") as fh:
        for job, record in entries:
            fh.write(json.dumps({"job": job, "record": record.to_dict()}) + "\n")
    lowest = min((r.config.get("seed", 0) for _, r in entries), default=None)
    arrays = {}
    for folder, (job, record) in zip(folders, entries):
        snapshots = folder / record.snapshots.get("file", SNAPSHOTS)
        if record.config.get("seed", 0) == lowest and snapshots.suffix == ".npz" and snapshots.exists():
            arrays |= {f"{job}/{k}": v for k, v in gallery_arrays(snapshots, stage in ALL_FRAMES).items()}
    write_npz(out / IMAGES, arrays)
    return len(entries), len({k.rsplit("/", 1)[0] for k in arrays})


def gallery_arrays(snapshots: Path, all_frames: bool) -> dict[str, np.ndarray]:
    """The first GALLERY_IMAGES images of a job's snapshots: truth, recon (all frames or the last)."""
    with np.load(snapshots) as z:
        truth, recon, steps = z["truth"], z["recon"], z["steps"]
    frames = slice(None) if all_frames else slice(-1, None)
    return {"truth": truth[:GALLERY_IMAGES], "recon": recon[frames, :GALLERY_IMAGES], "steps": steps[frames]}


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed's format with fixed member dates and order (byte-stable)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue())


def read(folder: Path) -> list[tuple[str, JobRecord]]:
    """(job folder name, record) of every job of a stage's record."""
    lines = (Path(folder) / JOBS).read_text().splitlines()
    return [(e["job"], JobRecord.from_dict(e["record"], f"{folder}/{JOBS}:{i}"))
            for i, e in enumerate(map(json.loads, lines), start=1)]


def images(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """{job: {truth, recon, steps}} of a stage's record."""
    path = Path(folder) / IMAGES
    if not path.exists():
        return {}
    out: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as z:
        for key in z.files:
            job, name = key.rsplit("/", 1)
            out.setdefault(job, {})[name] = z[key]
    return out


def unpack(folder: Path, dest: Path) -> int:
    """The record as job folders under `dest` (metrics.json, and snapshots.npz where the record
    keeps images): the layout report/collect.py reads. Returns the number of jobs."""
    kept = images(folder)
    jobs = read(folder)
    for job, record in jobs:
        where = Path(dest) / job
        where.mkdir(parents=True, exist_ok=True)
        record.write(where / METRICS)
        if job in kept:
            write_npz(where / record.snapshots.get("file", SNAPSHOTS), kept[job])
    return len(jobs)
