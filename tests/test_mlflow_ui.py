"""What the MLflow UI shows: the experiment's kind, each job's image series and dataset input,
and the sweep's parent run (table, gallery, figure), checked through MlflowClient on a real
SQLite store. One 3-job sweep on digits (2 targets, 10 steps) serves the module."""
import csv
import io
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import matplotlib.image as mpimg
import numpy as np
import pytest
from conftest import ROOT
from mlflow.tracking import MlflowClient

from gradleak.intervals import wilson
from gradleak.job_record import JobRecord
from gradleak.jobs import tracking
from gradleak.report import sweep_review as sr

SWEEP = ["defense=noise", "scale=1e-4,1e-2,1e-1", "attack.num_targets=2", "attack.steps=10"]


def sweep(tmp, *extra: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "GRADLEAK_THREADS": "1",
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    environ.pop(tracking.PARENT_ENV, None)
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", *SWEEP, *extra, f"tracking.uri=sqlite:///{tmp}/mlflow.db",
           f"hydra.sweep.dir={tmp}/sweep"]
    return subprocess.run(cmd, cwd=tmp, env=environ, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    done = sweep(tmp)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
    experiment = client.get_experiment_by_name("gradleak")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if tracking.PARENT_TAG not in r.data.tags]
    children = sorted((r for r in runs if tracking.PARENT_TAG in r.data.tags), key=lambda r: int(r.data.tags["job"]))
    assert len(parents) == 1 and len(children) == 3
    return tmp, client, experiment, parents[0], children, done


def read_artifact(client, run_id: str, path: str) -> str:
    with open(client.download_artifacts(run_id, path)) as f:
        return f.read()


def test_experiment_opens_in_the_model_training_view(swept):
    _, _, experiment, *_ = swept
    assert experiment.tags[tracking.KIND_TAG] == "custom_model_development"


def test_existing_experiments_are_tagged_unless_a_kind_was_chosen(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    plain = client.create_experiment("plain")
    guessed = client.create_experiment("guessed", tags={tracking.KIND_TAG: "genai_development_inferred"})
    chosen = client.create_experiment("chosen", tags={tracking.KIND_TAG: "genai_development"})
    for name in ("plain", "guessed", "chosen", "fresh"):
        tracking.ensure_experiment(client, name)
    kinds = {n: client.get_experiment_by_name(n).tags.get(tracking.KIND_TAG) for n in ("plain", "guessed", "chosen",
                                                                                         "fresh")}
    assert kinds == {"plain": tracking.KIND, "guessed": tracking.KIND, "chosen": "genai_development",
                     "fresh": tracking.KIND}
    assert len({plain, guessed, chosen}) == 3


def test_each_job_logs_its_reconstructions_as_one_image_series(swept):
    _, client, _, _, children, done = swept
    for run in children:
        files = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
        pngs = [f for f in files if f.endswith(".png")]
        assert all(f.startswith("images/attack~reconstruction+step+") for f in pngs)  # one key
        steps = sorted(int(f.split("+step+")[1].split("+")[0]) for f in pngs)
        snapshot_steps = json.loads(read_artifact(client, run.info.run_id, "metrics.json"))["snapshots"]["steps"]
        assert steps == snapshot_steps and len(set(steps)) >= 4 and steps[0] == 0  # spread over the steps taken
        image = mpimg.imread(client.download_artifacts(run.info.run_id, pngs[-1]))
        assert image.shape[0] > 2 * 8 and image.shape[0] == image.shape[1]  # 2 targets: square
    # the progress bar speaks of the attack, not of epochs
    assert "Epoch" not in done.stdout and "steps" in done.stdout and "exact" in done.stdout
    assert f"/#/experiments/{children[0].info.experiment_id}/runs/{children[0].info.run_id}" \
        "?workflowType=machine_learning" in done.stdout


def test_each_job_logs_what_it_attacked_as_a_dataset_input(swept):
    _, client, _, _, children, _ = swept
    digests = set()
    for run in children:
        (entry,) = run.inputs.dataset_inputs
        m = json.loads(read_artifact(client, run.info.run_id, "metrics.json"))
        drawn = ",".join(str(t["index"][0]) for t in m["targets"])
        assert entry.dataset.name == "digits test, 2 drawn by seed 0"
        assert json.loads(entry.dataset.source) == {"tags": {"dataset": "digits", "split": "test", "seed": "0",
                                                             "indices": drawn}}
        assert {t.key: t.value for t in entry.tags} == {"mlflow.data.context": "attack"}
        assert json.loads(entry.dataset.profile)["features_shape"] == [2, 1, 8, 8]
        digests.add(entry.dataset.digest)
    assert len(digests) == 1  # the same images behind every defense


def test_parent_run_holds_the_sweeps_table_gallery_and_figure(swept):
    _, client, _, parent, children, _ = swept
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"children.md", "children.csv", "gallery.png", "verdicts.png"} <= names
    rows = list(csv.DictReader(io.StringIO(read_artifact(client, parent.info.run_id, "children.csv"))))
    assert [r["run_id"] for r in rows] == [c.info.run_id for c in children]
    for row, run in zip(rows, children):
        m = json.loads(read_artifact(client, run.info.run_id, "metrics.json"))
        k = sum(t["success"] for t in m["targets"])
        assert row["overrides"] == run.data.tags["overrides"] and row["status"] == "FINISHED"
        assert (int(row["exact"]), int(row["targets"])) == (k, 2)
        assert float(row["exact_rate"]) == pytest.approx(m["attack"]["success_rate"])
        assert (float(row["exact_lo"]), float(row["exact_hi"])) == pytest.approx(wilson(k, 2))
        assert float(row["mse_median"]) == pytest.approx(m["attack"]["mse_median"])
        r = round(sum(t["reidentified"] for t in m["targets"]))
        assert float(row["reid_rate"]) == pytest.approx(m["attack"]["reid_rate"])
        assert (float(row["reid_lo"]), float(row["reid_hi"])) == pytest.approx(wilson(r, 2))
    # the weakest noise leaks both targets, the strongest none: Wilson 95% bounds for 2/2 and 0/2
    assert [int(r["exact"]) for r in (rows[0], rows[2])] == [2, 0]
    assert float(rows[0]["exact_lo"]) == pytest.approx(0.3424, abs=1e-4)
    assert float(rows[2]["exact_hi"]) == pytest.approx(0.6576, abs=1e-4)
    note = client.get_run(parent.info.run_id).data.tags["mlflow.note.content"]
    answer, table = note.split("\n\n", 2)[:2], note.split("\n\n", 2)[2]
    assert answer[0].startswith("**Answer**") and table == read_artifact(client, parent.info.run_id, "children.md")
    # the swept values as Hydra writes them into the jobs' overrides
    assert answer[1].splitlines()[0].startswith("- `scale=0.0001`: re-identified ") \
        and answer[1].splitlines()[0].endswith("exact 2/2 = 100% [34%, 100%]")
    assert table.count("| FINISHED |") == 3 and "2/2 = 100% [34%, 100%]" in table
    # each verdict per job as the parent's metrics (step: the job number), the swept values as params
    history = client.get_metric_history(parent.info.run_id, "sweep/exact_rate")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == \
        [(i, float(r["exact_rate"])) for i, r in enumerate(rows)]
    reid = client.get_metric_history(parent.info.run_id, "sweep/reidentified_lo")
    assert sorted(m.value for m in reid) == sorted(float(r["reid_lo"]) for r in rows)
    assert client.get_run(parent.info.run_id).data.params["sweep.scale"] == "0.0001,0.01,0.1"
    gallery = mpimg.imread(client.download_artifacts(parent.info.run_id, "gallery.png"))
    assert gallery.shape[0] > 300  # ground truth and one row per child
    assert parent.data.tags["swept"] == "scale"
    assert [d.dataset.name for d in parent.inputs.dataset_inputs] == ["digits test, 2 drawn by seed 0"]
    assert parent.info.run_name == "sweep " + " ".join(SWEEP)  # no tracking.uri or hydra.* in the name


def test_a_resumed_sweep_rebuilds_the_summary_from_the_earlier_runs(swept):
    tmp, client, experiment, first, children, _ = swept
    done = sweep(tmp, "resume=true")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sweep: 3 jobs: 0 finished, 0 failed, 3 skipped" in done.stdout
    parents = [r for r in client.search_runs([experiment.experiment_id])
               if tracking.PARENT_TAG not in r.data.tags and r.info.run_id != first.info.run_id]
    (resumed,) = parents
    rows = list(csv.DictReader(io.StringIO(read_artifact(client, resumed.info.run_id, "children.csv"))))
    assert [r["run_id"] for r in rows] == [c.info.run_id for c in children]
    assert {r["from"] for r in rows} == {"earlier sweep (resumed)"} and [r["job"] for r in rows] == ["0", "1", "2"]
    assert [int(r["exact"]) for r in rows][::2] == [2, 0]
    assert {"gallery.png", "verdicts.png"} <= {a.path for a in client.list_artifacts(resumed.info.run_id)}


# --- the review's pieces, without MLflow: fake runs ---------------------------------------------

def fake_child(job: int, name: str, successes: list[bool], reid=None, test_acc=None, status="FINISHED",
               shape=(1, 8, 8)):
    run = SimpleNamespace(info=SimpleNamespace(run_id=f"run{job:029d}", run_name=name, status=status, start_time=job),
                          data=SimpleNamespace(tags={"overrides": name}, metrics={}, params={}))
    attack = {"mse_median": 1e-3 * (job + 1), "label_acc": 1.0, "success_rate": sum(successes) / len(successes),
              **({"reid_rate": reid} if reid is not None else {})}
    train = {"test_acc": test_acc, "utility_drop": 0.01} if test_acc else None
    record = JobRecord(overrides=name.split(), config={}, attacker="dlg", defense={}, mlflow={}, device="cpu",
                       attack=attack, targets=[{"success": s} for s in successes], curve={}, snapshots={},
                       grid="reconstruction.png", train=train)
    child = sr.Child(run, job, False, metrics=record)
    child.truth = np.zeros((len(successes), *shape), np.float32)
    child.final = np.full((len(successes), *shape), 0.5, np.float32)
    return child


@pytest.mark.fast
def test_table_shows_reid_with_its_interval_only_where_measured():
    with_reid = [fake_child(0, "defense=none", [True] * 3 + [False], reid=0.75),
                 fake_child(1, "defense=prune", [False] * 4, reid=0.25)]
    rows = [sr.table_row(c) for c in with_reid]
    assert [(r["reidentified"], r["reid_rate"]) for r in rows] == [(3, 0.75), (1, 0.25)]
    assert (rows[0]["reid_lo"], rows[0]["reid_hi"]) == pytest.approx((0.3006, 0.9544), abs=1e-4)
    assert (rows[0]["exact_lo"], rows[0]["exact_hi"]) == pytest.approx((0.3006, 0.9544), abs=1e-4)
    parent = SimpleNamespace(info=SimpleNamespace(run_name="sweep defense=none,prune"))
    md = sr.markdown(rows, ["defense"], parent)
    assert "re-identified [95% CI]" in md
    assert "| 0 | none | FINISHED | 3/4 = 75% [30%, 95%] | 3/4 = 75% [30%, 95%] |" in md
    assert sr.answer(rows, ["defense"]).splitlines()[2:] == [
        "- `defense=none`: re-identified 3/4 = 75% [30%, 95%], exact 3/4 = 75% [30%, 95%]",
        "- `defense=prune`: re-identified 1/4 = 25% [5%, 70%], exact 0/4 = 0% [0%, 49%]", ""]
    assert sr._label(with_reid[1], ["defense"]) == "defense=prune\nre-identified 1/4\nexact 0/4"
    plain = sr.table_row(fake_child(2, "defense=none", [True, False]))
    assert "reid_rate" not in plain
    assert "re-identified" not in sr.markdown([plain], [], parent)


@pytest.mark.fast
def test_gallery_and_figure_draw_mixed_knobs_seeds_accuracy_and_other_targets(tmp_path):
    children = [fake_child(i, f"seed={s} defense={d}" + (" ratio=0.3" if d == "prune" else ""),
                           [i % 2 == 0] * 2, test_acc=0.9 - 0.1 * i)
                for i, (s, d) in enumerate([(0, "none"), (0, "prune"), (1, "none"), (1, "prune")])]
    children.append(fake_child(4, "seed=0 defense=none dataset=cifar10", [True, True], shape=(3, 32, 32)))
    for c in children:
        sr.table_row(c)
    knobs = sr.swept_knobs(children)
    assert knobs == ["seed", "defense", "ratio", "dataset"]
    assert sr._x_knob(knobs, children) == ("defense", False)  # not the seed: seeds are pooled
    assert sr._x_knob(["seed"], children) == ("seed", True)
    sr.knob_figure(tmp_path / "f.png", children, knobs)
    sr.gallery(tmp_path / "g.png", children, knobs)
    assert mpimg.imread(tmp_path / "f.png").shape[1] > 900  # the verdicts and test accuracy side by side
    # ground truth, 4 digits rows, ground truth again for the CIFAR-10 job, its row: 7 rows of 0.9 in at 100 dpi
    assert mpimg.imread(tmp_path / "g.png").shape[0] == pytest.approx((0.9 * 7 + 0.4) * 100, abs=2)


@pytest.mark.fast
def test_a_dataset_another_job_inserted_first_is_linked_not_a_failure(tmp_path):
    """Parallel jobs of one seed log the same dataset; when the other job's insert wins the
    race, the store's unique key rejects ours once: the run links theirs instead of failing."""
    import torch
    from mlflow.exceptions import MlflowException
    from omegaconf import OmegaConf

    from gradleak.jobs.job import attacked_dataset

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = tracking.ensure_experiment(client, "race")
    dataset = attacked_dataset(OmegaConf.create({"name": "digits"}), torch.zeros(1, 1, 1, 8, 8),
                               torch.zeros(1, 1, dtype=torch.long), torch.tensor([[7]]), 0)
    first, second = (client.create_run(experiment).info.run_id for _ in range(2))
    tracking.JobRun(client, first, "race", experiment).log_input(dataset, "attack")
    real, calls = client.log_inputs, []

    def lost_the_race(run_id, datasets):
        calls.append(run_id)
        if len(calls) == 1:
            raise MlflowException("duplicate key value violates unique constraint \"dataset_pk\"")
        return real(run_id, datasets=datasets)

    client.log_inputs = lost_the_race
    tracking.JobRun(client, second, "race", experiment).log_input(dataset, "attack")
    assert calls == [second, second]
    linked = [client.get_run(r).inputs.dataset_inputs[0].dataset.digest for r in (first, second)]
    assert linked[0] == linked[1]

    client.log_inputs = lambda run_id, datasets: (_ for _ in ()).throw(MlflowException("server down"))
    with pytest.raises(MlflowException, match="server down"):
        tracking.JobRun(client, second, "race", experiment).log_input(dataset, "attack")
