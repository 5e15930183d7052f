"""scripts/sweep.py: how a stage's sweeps are launched (without running a job)."""
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import sweep  # noqa: E402

from gradleak.jobs.study import load_study, stage_sweeps  # noqa: E402
from gradleak.jobs.sweeps import sweep_size  # noqa: E402


@pytest.mark.fast
def test_sweep_size_counts_the_sweeps_product_not_list_values():
    study = load_study("smoke")
    assert [sweep_size(list(s.overrides)) for s in stage_sweeps(study, "prune")] == [3 * 6 * 3]
    assert [sweep_size(list(s.overrides)) for s in stage_sweeps(study, "rounds")] == [9, 9, 9]
    assert "train.keep_rounds=[0,312,3119]" in stage_sweeps(study, "prune")[0].overrides
    assert set(sweep_size(list(s.overrides)) for s in stage_sweeps(study, "datasets")) == {1}



@pytest.mark.fast
def test_the_command_line_replaces_a_key_of_the_experiments_grid_as_hydra_does():
    """`run.py -m +experiment=batch attack.batch_size=1,4`: the sweep's job count and jobs are
    the ones Hydra's basic sweeper launches (the grid's key takes the command line's values)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    from gradleak.jobs.hydra_cli import as_swept, expand_sweep, parse_overrides

    overrides = ["attack.batch_size=1,2,4,8", "dataset=mnist", "seed=0,1", "attack.batch_size=1,4"]
    (launched,) = BasicSweeper.split_arguments(parse_overrides(overrides), None)
    assert expand_sweep(parse_overrides(as_swept(overrides))) == launched
    assert sweep_size(overrides) == len(launched) == 2 * 2

@pytest.mark.fast
def test_one_job_sweeps_run_side_by_side_after_the_first(monkeypatch, tmp_path):
    """The first sweep runs alone (it creates the tracking database); the others two at a
    time: each waits at a barrier for a partner, which a one-at-a-time launch never reaches."""
    sweeps = stage_sweeps(load_study("smoke"), "datasets")[:7]
    partner = threading.Barrier(2, timeout=30)
    calls = []

    def fake_multirun(overrides, data_dir, out, skip_missing=False, parallel=True):
        calls.append((out.name, parallel))
        if len(calls) > 1:
            partner.wait()
        return 2 if out.name == "svhn" else 0

    monkeypatch.setattr(sweep, "multirun", fake_multirun)
    monkeypatch.setattr(sweep, "parallel_jobs", lambda: 2)
    codes = sweep.run_sweeps(sweeps, "data", tmp_path)
    assert calls[0] == (sweeps[0].folder, False)
    assert sorted(calls[1:]) == sorted((s.folder, False) for s in sweeps[1:])
    assert codes == [2 if s.folder == "svhn" else 0 for s in sweeps]


@pytest.mark.fast
def test_a_jobs_run_name_leads_with_the_swept_values(monkeypatch):
    from gradleak.jobs import tracking
    from gradleak.jobs.job import run_name
    from gradleak.jobs.sweeps import swept_keys

    assert swept_keys(["defense=noise", "scale=1e-4,1e-2", "attack.num_targets=2", "seed=0,1"]) == ["scale", "seed"]
    monkeypatch.setenv(tracking.SWEPT_ENV, "scale,seed")
    job = ["defense=noise", "scale=1e-2", "attack.num_targets=2", "seed=1"]
    assert run_name(job) == "scale=1e-2 seed=1 defense=noise attack.num_targets=2"
    monkeypatch.delenv(tracking.SWEPT_ENV)
    assert run_name(job) == "defense=noise scale=1e-2 attack.num_targets=2 seed=1"
    assert run_name([]) == "defaults"


@pytest.mark.fast
def test_a_stage_record_is_written_only_when_every_job_left_its_record(monkeypatch, tmp_path):
    import shutil

    import synthetic

    from gradleak import stage_record
    from gradleak.jobs.study import Sweep

    raw = tmp_path / "raw"
    n = synthetic.write_datasets_stage(raw)
    monkeypatch.setattr(sweep, "ROOT", tmp_path)
    monkeypatch.setattr(sweep, "RECORDS", tmp_path / "records")
    ran = [Sweep("", ("seed=0,1,2", "dataset=mnist,cifar100"))]
    assert sweep.keep_record("datasets", ran, [0], raw / "datasets") == 0
    assert len(stage_record.read(tmp_path / "records" / "datasets")) == n == 6
    shutil.rmtree(tmp_path / "records")
    one_short = [Sweep("", ("seed=0,1,2,3", "dataset=mnist,cifar100"))]
    assert sweep.keep_record("datasets", one_short, [0], raw / "datasets") == 1
    assert not (tmp_path / "records" / "datasets").exists()
    skipped = Sweep("svhn", ("dataset=svhn", "seed=0"), skip_missing=True)  # exit 2: not here, no jobs
    assert sweep.keep_record("datasets", [*ran, skipped], [0, 2], raw / "datasets") == 0
