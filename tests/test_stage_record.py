"""A stage's record (gradleak.stage_record): what it keeps of the raw job folders is what the
report reads of them, it is byte-stable, and it is small."""
import filecmp
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import synthetic

from gradleak import stage_record
from gradleak.report import collect as results
from gradleak.report import figures

pytestmark = pytest.mark.fast
# Where the report writes a job's folder: the only columns a record changes (its images sit
# in a folder laid out from the record, not in the sweep's).
PATH_COLUMNS = ["job_dir", "snapshots", "grid"]


@pytest.fixture(scope="module")
def raw_and_unpacked(tmp_path_factory):
    """The synthetic study's job folders, its stages' records, and the records laid out again."""
    base = tmp_path_factory.mktemp("stages")
    raw, records, unpacked = base / "raw", base / "records", base / "unpacked"
    synthetic.write_results(raw)
    synthetic.write_second_attacker(raw)
    counts = {stage: stage_record.write(raw / stage, records / stage, stage) for stage in ("datasets", "defenses")}
    for stage in counts:
        stage_record.unpack(records / stage, unpacked / stage)
    return raw, records, unpacked, counts


def test_the_record_keeps_every_job_and_images_of_the_lowest_seed_only(raw_and_unpacked):
    raw, records, _, counts = raw_and_unpacked
    per_stage = {s: len(stage_record.job_folders(raw / s)) for s in counts}
    assert counts == {s: (n, n // 3 if s == "datasets" else 9) for s, n in per_stage.items()}
    kept = stage_record.images(records / "defenses")
    seeds = {job: record.config["seed"] for job, record in stage_record.read(records / "defenses")}
    assert {seeds[job] for job in kept} == {0}
    assert len(kept) == sum(seed == 0 for seed in seeds.values())


def test_the_datasets_stage_keeps_every_snapshot_the_others_the_last(raw_and_unpacked):
    raw, records, _, _ = raw_and_unpacked
    for stage, frames in (("datasets", len(synthetic.SNAPSHOT_STEPS)), ("defenses", 1)):
        for job, arrays in stage_record.images(records / stage).items():
            with np.load(raw / stage / job / "snapshots.npz") as z:
                np.testing.assert_array_equal(arrays["recon"], z["recon"][-frames:, :stage_record.GALLERY_IMAGES])
                np.testing.assert_array_equal(arrays["truth"], z["truth"][:stage_record.GALLERY_IMAGES])
                np.testing.assert_array_equal(arrays["steps"], z["steps"][-frames:])


def test_tables_collected_from_the_records_equal_the_raw_ones(raw_and_unpacked, tmp_path):
    raw, _, unpacked, _ = raw_and_unpacked
    from_raw, from_records = results.collect(raw, tmp_path), results.collect(unpacked, tmp_path)
    for name in ("summary", "targets", "curves"):
        assert len(from_raw[name]) > 0
        pd.testing.assert_frame_equal(from_records[name].drop(columns=PATH_COLUMNS, errors="ignore"),
                                      from_raw[name].drop(columns=PATH_COLUMNS, errors="ignore"))


def test_figures_drawn_from_the_records_equal_the_raw_ones(raw_and_unpacked, tmp_path):
    raw, _, unpacked, _ = raw_and_unpacked
    for name, root in (("raw", raw), ("record", unpacked)):
        np.random.seed(0)  # the strip plot's jitter draws from numpy's global generator
        results.write_tables(results.collect(root, tmp_path / name), tmp_path / name)
        figures.make_all(tmp_path / name, tmp_path / name / "figures")
    drawn = sorted(p.name for p in (tmp_path / "raw" / "figures").iterdir())
    assert "fig_gallery_prune.png" in drawn and "fig_reconstructions.png" in drawn
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "raw" / "figures", tmp_path / "record" / "figures",
                                               drawn, shallow=False)
    assert (mismatch, errors) == ([], [])


def test_a_record_is_byte_stable_whenever_it_is_written(raw_and_unpacked, tmp_path, monkeypatch):
    raw, records, _, _ = raw_and_unpacked
    later = time.time() + 86_400  # a zip member's date would move with the clock
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(time, "localtime", lambda *a: time.gmtime(later))
    stage_record.write(raw / "defenses", tmp_path / "again", "defenses")
    for name in (stage_record.JOBS, stage_record.IMAGES):
        assert (tmp_path / "again" / name).read_bytes() == (records / "defenses" / name).read_bytes()


def test_the_records_are_tabled_by_the_scripts_a_reader_runs(raw_and_unpacked, tmp_path):
    """README: `unpack_records.py docs/records out/ && collect.py out/ --out out/`."""
    import subprocess
    import sys

    _, records, _, counts = raw_and_unpacked
    root = Path(__file__).resolve().parents[1]
    for cmd in (["scripts/unpack_records.py", str(records), str(tmp_path)],
                ["scripts/collect.py", str(tmp_path), "--out", str(tmp_path)]):
        done = subprocess.run([sys.executable, *cmd], cwd=root, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary) == sum(n for n, _ in counts.values())
    assert set(summary["stage"]) == set(counts)
    empty = tmp_path / "none"
    empty.mkdir()
    done = subprocess.run([sys.executable, "scripts/unpack_records.py", str(empty), str(tmp_path / "x")],
                          cwd=root, capture_output=True, text=True)
    assert done.returncode == 1 and "holds no stage record" in done.stderr
