"""Real runs of run.py, checked through metrics.json and the MLflow database."""
import json

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from gradleak.victim.data import load_split


def runs_of(run_py):
    client = MlflowClient(f"sqlite:///{run_py.dir}/mlflow.db")
    experiment = client.get_experiment_by_name("gradleak")
    return client, client.search_runs([experiment.experiment_id])


def test_default_run_on_digits_leaks_and_is_tracked(run_py):
    res = run_py("seed=0")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "exact reconstruction (MSE < 0.001)" in res.stdout
    assert "re-identified (rank 1 of" in res.stdout and "mlflow ui --backend-store-uri" in res.stdout
    m = json.loads((run_py.dir / "run" / "metrics.json").read_text())
    assert len(m["targets"]) == 8
    # undefended DLG on 8x8 digits converges hard: every target rebuilt, label and all
    assert sum(t["success"] for t in m["targets"]) == 8
    assert sum(t["reidentified"] for t in m["targets"]) == 8
    assert max(t["mse"] for t in m["targets"]) < 1e-3
    assert m["attack"]["label_acc"] == 1.0
    assert (run_py.dir / "run" / "reconstruction.png").stat().st_size > 5000
    client, runs = runs_of(run_py)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_id == m["mlflow"]["run_id"]
    assert run.data.params["dataset.name"] == "digits" and run.data.params["attack.steps"] == "300"
    assert run.data.metrics["mse_median"] == pytest.approx(m["attack"]["mse_median"])
    assert run.data.tags["defense"] == "none" and run.data.tags["git_commit"]
    curve = client.get_metric_history(run.info.run_id, "curve/loss_median")
    assert len(curve) == len(m["curve"]["step"]) > 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"reconstruction.png", "metrics.json", "config.yaml", "snapshots.npz"} <= artifacts


def test_run_on_real_mnist(run_py, shared_data):
    res = run_py("dataset=mnist", f"data_dir={shared_data}", "attack.num_targets=2", "attack.steps=40")
    assert res.returncode == 0, res.stderr[-2000:]
    m = json.loads((run_py.dir / "run" / "metrics.json").read_text())
    assert m["config"]["dataset.name"] == "mnist"
    test = load_split(OmegaConf.create({"name": "mnist", "data_dir": str(shared_data)}), "test")
    drawn = [t["index"][0] for t in m["targets"]]  # drawn by the seed from the test split
    assert len(set(drawn)) == 2 and [t["label"] for t in m["targets"]] == [[int(test.labels[i])] for i in drawn]
    assert m["targets"][0]["success"] and m["targets"][0]["mse"] < 1e-3
    losses = [v for v in m["curve"]["loss_median"] if v is not None]  # step 0: not yet evaluated
    assert m["curve"]["loss_median"][0] is None and losses[-1] < 1e-6 * losses[0]
    _, runs = runs_of(run_py)
    assert runs[0].info.status == "FINISHED" and runs[0].data.params["dataset.name"] == "mnist"


def test_noise_sweep_one_parent_three_children(run_py):
    res = run_py("-m", "defense=noise", "scale=1e-4,1e-3,1e-2", "attack.num_targets=2", "attack.steps=30")
    assert res.returncode == 0, res.stderr[-2000:]
    _, runs = runs_of(run_py)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(float(r.data.params["defense.scale"]) for r in children) == [1e-4, 1e-3, 1e-2]
    assert {r.data.params["defense.scale"] for r in children} == {"0.0001", "0.001", "0.01"}
    assert all("mse_mean" in r.data.metrics and "mse_median" in r.data.metrics for r in children)
    assert {r.info.run_name for r in children} == {  # the swept value first
        f"scale={s} defense=noise attack.num_targets=2 attack.steps=30" for s in ("0.0001", "0.001", "0.01")}
    assert all(r.info.status == "FINISHED" for r in runs)
    # stronger noise, worse reconstruction
    mse = {float(r.data.params["defense.scale"]): r.data.metrics["mse_median"] for r in children}
    assert mse[1e-2] > mse[1e-4]


@pytest.mark.parametrize("args,message", [
    (["defense=none", "scale=1e-3"], "error: scale=1e-3: 'scale' exists only with defense=noise"),
    (["defense=prune", "ratio=1.5"], "error: ratio=1.5: allowed range is 0 <= ratio < 1"),
    (["dataset=svhn", "data_dir={tmp}/no_data"], "error: dataset=svhn: files not found in {tmp}/no_data"),
])
def test_bad_input_exits_2_with_one_line_and_no_run(run_py, args, message):
    tmp = run_py.dir
    res = run_py(*[a.format(tmp=tmp) for a in args])
    message = message.format(tmp=tmp)
    assert res.returncode == 2
    assert res.stderr.strip().startswith(message) and len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr + res.stdout
    assert not (run_py.dir / "mlflow.db").exists()
    assert not (tmp / "no_data").exists()  # a failed download leaves no empty folders behind


def test_attack_round_beyond_the_training_run_exits_2_before_training(run_py):
    res = run_py("train=smoke", "attack.round=999999", timeout=120)  # training and replay: minutes
    assert res.returncode == 2
    assert res.stderr == ("error: attack.round=999999: train=smoke on dataset=digits has 220 training steps;"
                          " allowed attack.round=0..219\n")
    assert res.stdout == ""  # no training, no replay, no progress bars
    assert not (run_py.dir / "run").exists() and not (run_py.dir / "mlflow.db").exists()
