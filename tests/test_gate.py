"""The study gate's parts (gradleak/gate): the comparison and its tolerance, which probes a
job needs, new-probe-only changes recorded without a rerun, and a probe's real numbers.
The whole gate on a copy of the checkout is tests/test_study_check.py."""
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from gradleak.gate import fingerprint as fp
from gradleak.gate.probes import check_names, probe_stop_rules, probes_of

pytestmark = pytest.mark.fast
ROOT = Path(__file__).resolve().parents[1]


def stage(probes: dict, jobs: dict | None = None) -> dict:
    return {"profile": "smoke", "jobs": jobs or {"seed=0": "abc"}, "probes": probes}


def test_numbers_within_the_tolerance_agree_and_beyond_it_move():
    committed = stage({"p": {"loss": [2.0, 1e-9], "n": 3, "ok": True}})
    inside = stage({"p": {"loss": [2.0 * (1 + 0.5 * fp.RTOL), 1e-9 + 0.5 * fp.ATOL], "n": 3, "ok": True}})
    assert fp.differences(committed, inside) == []
    outside = stage({"p": {"loss": [2.0 * (1 + 3 * fp.RTOL), 1e-9], "n": 3, "ok": True}})
    assert fp.differences(committed, outside) == [f"probe p: .loss[0] 2.0 -> {2.0 * (1 + 3 * fp.RTOL)!r}"]


@pytest.mark.parametrize("fresh,line", [
    ({"loss": [2.0, 1e-9], "n": 4, "ok": True}, "probe p: .n 3 -> 4"),            # integers exactly
    ({"loss": [2.0, 1e-9], "n": 3, "ok": 1}, "probe p: .ok True -> 1"),           # a bool is no int
    ({"loss": [2.0], "n": 3, "ok": True}, "probe p: .loss length 2 -> 1"),
    ({"loss": [float("nan"), 1e-9], "n": 3, "ok": True}, "probe p: .loss[0] 2.0 -> nan"),
])
def test_exact_values_and_shapes_must_match(fresh, line):
    assert fp.differences(stage({"p": {"loss": [2.0, 1e-9], "n": 3, "ok": True}}), stage({"p": fresh})) == [line]


def test_a_job_config_change_or_a_new_job_is_a_difference():
    committed = stage({}, {"seed=0": "abc", "seed=1": "def"})
    assert fp.differences(committed, stage({}, {"seed=0": "abc", "seed=1": "xyz", "seed=2": "ghi"})) == [
        "job added: seed=2", "job config changed: seed=1"]


def compose_job(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_a_job_needs_the_probes_of_the_code_it_runs():
    cfg = compose_job("attack=adaptive", "defense=precision", "precision=int8", "train=smoke", "dataset=mnist")
    assert probes_of(cfg) == {"data/torchvision", "defense/precision-int8", "attack/dlg adaptive/precision-int8",
                              "training/precision-int8", "job/attack", "job/train", "model/lenet", "stop_rules",
                              "verdicts"}
    rounds = compose_job("attack=ig", "defense=prune", "train=smoke", "attack.round=3")
    assert {"round/ig/prune", "job/round", "training/prune"} <= probes_of(rounds)
    assert not any(n.startswith("attack/") for n in probes_of(rounds))  # IG has no stop rules either
    assert "stop_rules" not in probes_of(rounds)


def test_the_verdicts_probe_moves_with_the_distractors_a_job_draws(monkeypatch, tmp_path):
    """The judge's distractor draw (jobs/job.py: cfg.seed + 1) moves the probe's ranks; the
    converging job probe's are rank 1 whatever the draw."""
    from gradleak.gate.probes import probe_verdicts
    from gradleak.jobs import job

    before = probe_verdicts(tmp_path / "a")
    assert sorted(set(before["reid_rank"]))[-1] > 1 and 1 in before["reid_rank"]  # ranks between the extremes
    draw = job.draw_distractors
    monkeypatch.setattr(job, "draw_distractors", lambda n, m, seed: draw(n, m, seed + 6))
    assert probe_verdicts(tmp_path / "b")["reid_rank"] != before["reid_rank"]


def test_a_job_without_a_probe_is_refused():
    with pytest.raises(KeyError, match="no probe for model/resnet20"):
        check_names(probes_of(compose_job("model=resnet20")))


def test_only_new_probes_are_recorded_in_dvc_lock_without_a_rerun(tmp_path):
    shutil.copy(ROOT / "dvc.lock", tmp_path / "dvc.lock")
    committed = fp.read(ROOT, "batch")
    grown = {**committed, "probes": {**committed["probes"], "new/probe": {"x": 1.0}}}
    assert fp.only_added(fp.differences(committed, grown))
    moved = {**committed, "profile": "paper"}
    assert not fp.only_added(fp.differences(committed, moved))
    fp.write(tmp_path, "batch", grown)
    fp.relock(tmp_path, "batch")
    lock = yaml.safe_load((tmp_path / "dvc.lock").read_text())
    dep = lock["stages"]["sweep@batch"]["deps"][0]
    data = fp.path_of(tmp_path, "batch").read_bytes()
    assert (dep["path"], dep["md5"], dep["size"]) == ("docs/fingerprint/batch.json", hashlib.md5(data).hexdigest(),
                                                      len(data))
    assert lock["stages"]["sweep@noise"] == yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]["sweep@noise"]
    assert json.loads(data)["probes"]["new/probe"] == {"x": 1.0}


def test_the_stop_rule_probe_settles_each_target_by_the_rule_its_trace_calls_for(tmp_path):
    """Study settings (conf/attack/dlg.yaml): 3 restarts 20 steps apart, converged below 1e-8
    of the initial loss, stalled under 1% improvement over 20 steps, budget 300 steps."""
    got = probe_stop_rules(tmp_path)
    assert got["reasons"] == ["converged", "losing_restart", "not_started",  # 0.5^n: 1e-8 at n = 27
                              "stalled", "losing_restart", "losing_restart",  # 0.3 + 0.7 * 0.8^n levels off
                              "budget", "losing_restart", "losing_restart"]   # 0.97^n: never settles
    assert got["stop_step"][:4] == [27, 7, -1, 45]
    assert got["steps"][6] == 300
