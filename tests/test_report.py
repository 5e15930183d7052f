"""Collect and figures on a small synthetic results tree (no sweep needed)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import synthetic
from PIL import Image

from gradleak.report import collect as results
from gradleak.report import figures, paper
from gradleak.report import statistics as aggregate
from gradleak.victim.defenses.noise import noise_variance

ROOT = Path(__file__).resolve().parents[1]
T_975_2DF_OVER_SQRT3 = 2.4841377117503303  # t(0.975, df=2) / sqrt(3)
GALLERIES = [f"fig_gallery_{f}.png" for f in ("noise-gaussian", "noise-laplacian", "precision", "prune")]
PNGS = ["fig_reconstructions.png", "fig_mse_per_dataset.png", "fig_defenses.png",
        "fig_frontier.png", "fig_leak_rates.png", "fig_thresholds.png", *GALLERIES]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    n_jobs = synthetic.write_results(out / "sweeps")
    tables = results.collect(out / "sweeps", out)
    results.write_tables(tables, out)
    return out, n_jobs, tables


@pytest.mark.fast
def test_summary_has_one_row_per_job_with_identity_config_and_metrics(tree):
    _, n_jobs, t = tree
    s = t["summary"]
    assert n_jobs == 6 + synthetic.N_DEFENSE_JOBS == len(s)
    expected = {"stage", "job", "seed", "family", "strength", "setting", "overrides", "job_dir",
                "snapshots", "grid", "mlflow_run_id", "dataset.name", "attack.steps",
                "defense.name", "defense.scale", "defense.ratio", "defense.precision",
                "mse_mean", "mse_median", "psnr_mean", "ssim_mean", "label_acc", "success_rate",
                "loss_median", "diverged_rate", "evals_mean", "attack_wall_s", "test_acc",
                "utility_drop", "baseline_test_acc", "train_wall_s"}
    assert expected <= set(s.columns)
    assert set(s["stage"]) == {"datasets", "defenses"}
    assert s["family"].value_counts().to_dict() == {
        "none": 9, "noise-gaussian": 6, "prune": 6, "precision": 4, "noise-laplacian": 3}
    assert set(s.loc[s["family"] == "prune", "strength"]) == {0.1, 0.3}
    assert set(s.loc[s["family"] == "precision", "strength"]) == {"fp16", "bf16"}
    assert s["strength"][s["family"] == "none"].isna().all()
    gauss = s[s["setting"] == "defense=noise noise=gaussian scale=0.01"]
    assert sorted(gauss["seed"]) == [0, 1, 2]
    assert s.loc[s["stage"] == "datasets", "test_acc"].isna().all()


@pytest.mark.fast
def test_targets_and_curves_are_long_tables(tree):
    _, n_jobs, t = tree
    assert len(t["targets"]) == n_jobs * synthetic.TARGETS
    assert {"stage", "job", "seed", "family", "strength", "dataset.name", "target", "mse",
            "psnr", "ssim", "success", "diverged", "evals"} <= set(t["targets"].columns)
    assert list(t["curves"].columns) == ["stage", "job", "step", "evals", "loss_median",
                                         "mse_median", "success_rate"]
    assert len(t["curves"]) == n_jobs * synthetic.STEPS


@pytest.mark.fast
def test_paths_are_relative_to_the_tables_and_resolve(tree):
    out, _, _ = tree
    s = results.read_tables(out)["summary"]
    for rel in s["snapshots"]:
        assert not Path(rel).is_absolute() and (out / rel).is_file()
    assert (out / s["job_dir"].iloc[0] / "metrics.json").is_file()


@pytest.mark.fast
def test_a_single_sweep_folder_is_its_own_stage(tree):
    out, _, _ = tree
    s = results.collect(out / "sweeps" / "defenses", out)["summary"]
    assert len(s) == synthetic.N_DEFENSE_JOBS and set(s["stage"]) == {"defenses"}
    assert all(job.split("_")[0].isdigit() for job in s["job"])


@pytest.mark.fast
def test_t_interval_on_known_numbers():
    mean, lo, hi = aggregate.t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert hi - mean == pytest.approx(T_975_2DF_OVER_SQRT3, rel=1e-9)
    assert mean - lo == pytest.approx(T_975_2DF_OVER_SQRT3, rel=1e-9)


@pytest.mark.fast
def test_no_interval_from_one_seed():
    mean, lo, hi = aggregate.t_interval([0.7, np.nan])
    assert mean == 0.7 and np.isnan(lo) and np.isnan(hi)
    assert np.isnan(aggregate.t_interval([])[0])


@pytest.mark.fast
def test_over_seeds_gives_the_t_interval_per_setting(tree):
    s = tree[2]["summary"]
    agg = aggregate.over_seeds(s[s["stage"] == "defenses"], ["test_acc"]).set_index("setting")
    strong = agg.loc["defense=noise noise=gaussian scale=0.1"]
    assert strong["n_seeds"] == 3
    assert strong["test_acc"] == pytest.approx(0.60)
    assert strong["test_acc_hi"] - strong["test_acc"] == pytest.approx(0.02 * T_975_2DF_OVER_SQRT3)
    single = agg.loc["defense=precision precision=bf16"]
    assert single["n_seeds"] == 1 and single["test_acc"] == pytest.approx(0.91)
    assert np.isnan(single["test_acc_lo"]) and np.isnan(single["test_acc_hi"])


@pytest.mark.fast
def test_curve_over_seeds_is_a_geometric_mean_with_a_log_interval():
    curves = pd.DataFrame({"family": "prune", "step": 0, "evals": [10.0, 20.0, 30.0],
                           "loss_median": [1.0, 10.0, 100.0]})
    row = aggregate.curve_over_seeds(curves, "loss_median", ["family"]).iloc[0]
    assert row["evals"] == 20.0 and row["loss_median"] == pytest.approx(10.0)
    assert row["loss_median_hi"] == pytest.approx(10 ** (1 + T_975_2DF_OVER_SQRT3))
    assert row["loss_median_lo"] == pytest.approx(10 ** (1 - T_975_2DF_OVER_SQRT3))


@pytest.mark.fast
def test_the_report_package_imports_without_torch():
    code = ("import sys; import gradleak.report.collect, gradleak.report.statistics, "
            "gradleak.report.paper, gradleak.report.figures, gradleak.report.sweep_review, "
            "gradleak.report.job_figures; "
            "print('torch' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"


@pytest.mark.parametrize("family, strength, starts", [
    ("noise-gaussian", 0.1, "yes"), ("noise-gaussian", 0.01, "no"),
    ("noise-laplacian", 0.1, "yes"), ("noise-laplacian", 0.099, "no"),
    ("prune", 0.2, "no"), ("prune", 0.3, "yes"),
    ("precision", "fp16", "no"), ("precision", "bf16", "not studied"),
])
@pytest.mark.fast
def test_paper_claims_follow_the_stated_thresholds(family, strength, starts):
    variance = noise_variance(family.removeprefix("noise-"), strength) if "noise" in family else np.nan
    ref = paper.paper_reference(family, strength, variance)
    assert ref["paper_defends"].startswith(starts)
    assert np.isnan(ref["paper_test_acc"]) and ref["paper_checked"] == "unchecked"


@pytest.mark.fast
def test_paper_baseline_accuracy_is_marked_unchecked():
    ref = paper.paper_reference("none")
    assert ref["paper_test_acc"] == 76.3 and ref["paper_checked"] == "unchecked"
    assert "Table 2" in ref["paper_source"]


@pytest.mark.fast
def test_the_undefended_reference_stage_joins_the_defense_table(tree):
    summary, targets = (tree[2][k].copy() for k in ("summary", "targets"))
    for df in (summary, targets):  # as in the study: the undefended jobs run as a stage of their own
        df.loc[(df["stage"] == "defenses") & (df["family"] == "none"), "stage"] = "undefended"
    table = paper.defense_table(summary, targets)
    none = table[table["family"] == "none"]
    assert list(none["stage"]) == ["undefended"] and int(none["n_seeds"].iloc[0]) == 3
    assert "datasets" not in set(table["stage"])  # a survey, not a verdict


@pytest.mark.fast
def test_wilson_interval_on_known_numbers():
    lo, hi = aggregate.wilson(0, 12)
    assert lo == 0.0 and hi == pytest.approx(0.2425, abs=1e-4)  # 1.96^2 / (12 + 1.96^2)
    lo, hi = aggregate.wilson(8, 16)
    assert (lo, hi) == (pytest.approx(0.2800, abs=1e-4), pytest.approx(0.7200, abs=1e-4))


@pytest.mark.fast
def test_bootstrap_median_brackets_the_median():
    values = np.random.default_rng(0).normal(10.0, 1.0, 400)
    median, lo, hi = aggregate.bootstrap_median(values)
    assert median == pytest.approx(np.median(values))
    assert lo < median < hi and 0.05 < hi - lo < 0.4  # the median's standard error is about 0.063
    assert aggregate.bootstrap_median([3.0, np.inf, 3.0]) == (3.0, 3.0, 3.0)


@pytest.mark.fast
def test_verdicts_pool_every_target_of_every_seed(tree):
    targets = tree[2]["targets"]
    agg = aggregate.over_targets(targets[targets["stage"] == "defenses"]).set_index("setting")
    weak = agg.loc["defense=prune ratio=0.1"]  # final MSE about 2e-4: exact in most targets
    rows = targets[targets["setting"] == "defense=prune ratio=0.1"]
    assert (weak["n_seeds"], weak["n_targets"]) == (3, synthetic.TARGETS)
    assert weak["success_rate"] == pytest.approx(rows["success"].mean())
    k, n = rows["success"].sum(), len(rows)
    assert (weak["success_rate_lo"], weak["success_rate_hi"]) == aggregate.wilson(k, n) and n == 12
    assert weak["reid_rate"] == 1.0 and weak["mse_median"] == pytest.approx(rows["mse"].median())


@pytest.mark.fast
def test_defense_table_in_percent_with_paper_columns(tree):
    table = paper.defense_table(tree[2]["summary"], tree[2]["targets"])
    assert len(table) == len(synthetic.DEFENSES)
    assert list(table["family"]) == ["none", "noise-gaussian", "noise-gaussian", "noise-laplacian",
                                     "precision", "precision", "prune", "prune"]
    assert list(table.loc[table["family"] == "precision", "strength"]) == ["fp16", "bf16"]
    strong = table[(table["family"] == "noise-gaussian") & (table["strength"] == 0.1)].iloc[0]
    assert strong["test_acc"] == pytest.approx(60.0) and strong["variance"] == pytest.approx(1e-2)
    assert strong["test_acc_hi"] - 60.0 == pytest.approx(2 * T_975_2DF_OVER_SQRT3)
    assert strong["success_rate"] == 0.0 and strong["paper_defends"].startswith("yes")
    assert (strong["n_seeds"], strong["n_targets"]) == (3, synthetic.TARGETS)
    assert strong["success_rate_hi"] == pytest.approx(100 * aggregate.wilson(0, 12)[1])
    md = paper.markdown_table(table)
    assert "| 60.0 ± 5.0 |" in md and "76.3 (unchecked)" in md
    assert "| 0 [0–24] |" in md  # exact reconstructions of the strong noise: 0 of 12, Wilson
    bf16 = next(line for line in md.splitlines() if "| bf16 |" in line)
    assert "| 1 | 4 | 91.0 |" in bf16 and "±" not in bf16


def _assert_real_png(path: Path):
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L"), dtype=float)
    assert min(pixels.shape) > 300 and pixels.std() > 10, path


def test_make_all_writes_every_figure_and_table(tree, tmp_path):
    out, _, _ = tree
    written = figures.make_all(out, tmp_path / "figures")
    names = sorted(p.name for p in written)
    assert names == sorted(PNGS + ["table_defenses.csv", "table_defenses.md", "table_claims.md"])
    for name in PNGS:
        _assert_real_png(tmp_path / "figures" / name)
    csv = pd.read_csv(tmp_path / "figures" / "table_defenses.csv")
    assert {"test_acc", "test_acc_lo", "test_acc_hi", "success_rate", "n_seeds", "n_targets",
            "reid_rate", "reid_rate_lo", "reid_rate_hi", "variance",
            "paper_test_acc", "paper_defends", "paper_source", "paper_checked"} <= set(csv.columns)
    assert not csv["setting"].str.contains("data_dir").any()


def _collected(tmp_path, write_stages) -> Path:
    write_stages(tmp_path / "sweeps")
    results.write_tables(results.collect(tmp_path / "sweeps", tmp_path), tmp_path)
    return tmp_path


@pytest.mark.fast
def test_only_the_datasets_stage_skips_defense_figures(tmp_path, capsys):
    res = _collected(tmp_path, synthetic.write_datasets_stage)
    written = figures.make_all(res, res / "figures")
    assert sorted(p.name for p in written) == ["fig_mse_per_dataset.png", "fig_reconstructions.png"]
    printed = capsys.readouterr().out
    assert "skipping the verdict figures" in printed and "skipping the defense figure" in printed


def test_untrained_defenses_stage_skips_only_the_frontier(tmp_path, capsys):
    res = _collected(tmp_path, lambda root: synthetic.write_defenses_stage(root, train=False))
    written = {p.name for p in figures.make_all(res, res / "figures")}
    assert written == {"fig_reconstructions.png", "fig_mse_per_dataset.png", "fig_defenses.png",
                       "fig_leak_rates.png", "fig_thresholds.png", *GALLERIES,
                       "table_defenses.csv", "table_defenses.md", "table_claims.md"}
    assert "no undefended 'datasets' stage" in capsys.readouterr().out
    _assert_real_png(res / "figures" / "fig_defenses.png")


def _script(name, *args):
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    env = os.environ | {"PYTHONPATH": path}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT)


def test_cli_collect_then_figures(tree, tmp_path):
    out, n_jobs, _ = tree
    run = _script("collect.py", out / "sweeps", "--out", tmp_path)
    assert run.returncode == 0, run.stderr
    assert len(pd.read_csv(tmp_path / "summary.csv")) == n_jobs
    run = _script("figures.py", "--results", tmp_path, "--out", tmp_path / "figs")
    assert run.returncode == 0, run.stderr
    assert {p.name for p in (tmp_path / "figs").iterdir()} >= set(PNGS)


def test_cli_fails_in_one_line_on_bad_input(tmp_path):
    run = _script("collect.py", tmp_path / "nowhere", "--out", tmp_path)
    assert run.returncode == 2 and len(run.stderr.strip().splitlines()) == 1
    assert "nowhere" in run.stderr
    run = _script("figures.py", "--results", tmp_path, "--out", tmp_path / "figs")
    assert run.returncode == 1 and "summary.csv" in run.stderr and "Traceback" not in run.stderr


@pytest.mark.fast
def test_diverged_targets_and_infinite_losses_do_not_break_figures(tmp_path):
    import json
    synthetic.write_datasets_stage(tmp_path / "sweeps")
    path = next((tmp_path / "sweeps" / "datasets").glob("0_*/metrics.json"))
    m = json.loads(path.read_text())
    m["targets"][0] |= {"mse": float("inf"), "success": False, "diverged": True}
    m["curve"]["loss_median"][-1] = float("inf")
    path.write_text(json.dumps(m))
    results.write_tables(results.collect(tmp_path / "sweeps", tmp_path), tmp_path)
    written = {p.name for p in figures.make_all(tmp_path, tmp_path / "figures")}
    assert written == {"fig_reconstructions.png", "fig_mse_per_dataset.png"}
    targets = pd.read_csv(tmp_path / "targets.csv")
    assert targets["diverged"].sum() == 1 and np.isinf(targets["mse"]).sum() == 1


@pytest.mark.fast
def test_a_named_defense_stage_without_defenses_is_skipped(tree, capsys):
    t = tree[2]
    assert figures.defense_curves(t["summary"], t["curves"], stage="datasets") is None
    assert figures.defense_curves(t["summary"], t["curves"], stage="nosuch") is None
    assert "has no defended jobs" in capsys.readouterr().out


@pytest.fixture(scope="module")
def two_attackers(tmp_path_factory):
    out = tmp_path_factory.mktemp("attackers")
    synthetic.write_defenses_stage(out / "sweeps")
    synthetic.write_second_attacker(out / "sweeps")
    results.write_tables(results.collect(out / "sweeps", out), out)
    return out


@pytest.mark.fast
def test_each_attacker_is_a_row_and_the_strongest_takes_each_verdicts_best(two_attackers):
    t = results.read_tables(two_attackers)
    summary, targets = t["summary"], t["targets"]
    ig = summary[summary["attacker"] == "ig"]
    assert len(ig) == 3 and set(ig["setting"]) == {"defense=prune ratio=0.3"}  # attack=ig is the column
    assert set(summary["attacker"]) == {"dlg", "ig"}
    table = paper.defense_table(summary, targets)
    rows = table[table["setting"] == "defense=prune ratio=0.3"].set_index("attacker")
    assert list(rows.index) == ["dlg", "ig", "strongest"]  # in ATTACKER_ORDER
    assert rows.loc["dlg", "reid_rate"] < 50 < rows.loc["ig", "reid_rate"]  # MSE 3e-2 against 2e-3
    best = rows.loc["strongest"]
    for rate in ("reid_rate", "success_rate"):
        top = rows.loc[["dlg", "ig"], rate].idxmax()
        assert best[rate] == rows.loc[top, rate] and best[f"{rate}_lo"] == rows.loc[top, f"{rate}_lo"]
        assert best[f"{rate}_attacker"] == top
    assert best["psnr_median"] == rows.loc[["dlg", "ig"], "psnr_median"].max()
    assert best["test_acc"] == rows.loc["dlg", "test_acc"]  # one defended training
    assert (table["attacker"] == "strongest").sum() == 1  # settings with one attacker get none
    assert "strongest (ig)" in paper.markdown_table(table)


def test_figures_judge_each_setting_by_its_strongest_attacker(two_attackers, tmp_path):
    from gradleak.report import verdict_figures as verdicts

    t = results.read_tables(two_attackers)
    table = paper.defense_table(t["summary"], t["targets"])
    chosen = verdicts.strongest_jobs(table, t["summary"])
    assert len(chosen) == len(t["summary"]) - 3  # each setting's jobs once: prune 30% by ig alone
    assert set(chosen.loc[chosen["setting"] == "defense=prune ratio=0.3", "attacker"]) == {"ig"}
    assert set(chosen.loc[chosen["setting"] != "defense=prune ratio=0.3", "attacker"]) == {"dlg"}
    front = verdicts.strongest_rows(table)
    assert front.loc[front["setting"] == "defense=prune ratio=0.3", "attacker"].tolist() == ["strongest"]
    written = {p.name for p in figures.make_all(two_attackers, tmp_path)}
    assert {"fig_leak_rates.png", "fig_frontier.png", "fig_thresholds.png", "fig_gallery_prune.png"} <= written
    _assert_real_png(tmp_path / "fig_leak_rates.png")


@pytest.mark.fast
def test_two_roots_pool_their_stages_of_the_same_name(tmp_path):
    first, later = tmp_path / "study", tmp_path / "later"
    synthetic.write_defenses_stage(first)
    synthetic.write_second_attacker(later)  # defenses/ig/...: 3 more jobs of stage `defenses`
    run = _script("collect.py", first, later, "--out", tmp_path / "out")
    assert run.returncode == 0, run.stderr
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert len(summary) == synthetic.N_DEFENSE_JOBS + 3 and set(summary["stage"]) == {"defenses"}
    pooled = aggregate.over_targets(pd.read_csv(tmp_path / "out" / "targets.csv"))
    assert pooled.loc[pooled["attacker"] == "ig", "n_targets"].tolist() == [synthetic.TARGETS]


@pytest.mark.fast
def test_a_tie_on_one_verdict_goes_to_the_attacker_stronger_on_the_other():
    base = {"stage": "prune", "setting": "defense=prune ratio=0.3", "family": "prune", "family_title": "Pruning",
            "family_rank": 3, "strength": 0.3, "strength_label": "30%", "strength_rank": 0.3, "variance": np.nan}
    bounds = {f"{r}_{b}": 0.0 for r in ("reid_rate", "success_rate", "psnr_median", "mse_median") for b in ("lo", "hi")}
    measured = [("dlg", 0.0, 24.0), ("ig", 19.0, 25.0), ("dlg adaptive", 98.0, 60.0)]  # prune 30%, as measured
    rows = [{**base, **bounds, "attacker": who, "reid_rate": 100.0, "success_rate": exact, "psnr_median": psnr,
             "mse_median": 1e-3} for who, exact, psnr in measured]
    best = paper.with_strongest(pd.DataFrame(rows)).iloc[-1]
    assert best["attacker"] == "strongest"
    assert best["reid_rate_attacker"] == "dlg adaptive" and best["success_rate_attacker"] == "dlg adaptive"


def test_dpsgd_settings_carry_their_epsilon_into_the_table_and_figures(tmp_path):
    root = tmp_path / "sweeps"
    synthetic.write_defenses_stage(root)
    epsilons = synthetic.write_dpsgd_stage(root)
    results.write_tables(results.collect(root, tmp_path), tmp_path)
    t = results.read_tables(tmp_path)
    table = paper.defense_table(t["summary"], t["targets"])
    dp = table[table["family"] == "dpsgd"].set_index("strength")
    assert {float(z): e for z, e in dp["epsilon"].items()} == epsilons
    assert table.loc[table["family"] != "dpsgd", "epsilon"].isna().all()
    assert dp.loc["1.0", "test_acc"] == pytest.approx(80.0)  # 0.9 - 0.1 z, in percent, mean over seeds
    md = paper.markdown_table(table)
    assert "ε (DP-SGD)" in md and "| 9.9 |" in md and "| 1.2 |" in md
    written = {p.name for p in figures.make_all(tmp_path, tmp_path / "figs")}
    assert {"fig_dpsgd.png", "fig_gallery_dpsgd.png", "fig_dp_bound.png", "table_dp_bound.md"} <= written
    _assert_real_png(tmp_path / "figs" / "fig_dpsgd.png")
    _assert_real_png(tmp_path / "figs" / "fig_dp_bound.png")
    # 1 + 99 distractors: Phi(Phi^-1(0.01) + 1/z) = Phi(-0.326) at z = 0.5, Phi(-1.326) at z = 1
    bound = (tmp_path / "figs" / "table_dp_bound.md").read_text()
    assert "| z=0.5 (C=1) | 2 | 37.2% |" in bound and "| z=1 (C=1) | 1 | 9.2% |" in bound


def test_rounds_stage_counts_images_per_round_and_stays_out_of_the_defense_table(tmp_path):
    from gradleak.report import rounds

    root = tmp_path / "sweeps"
    synthetic.write_defenses_stage(root)
    synthetic.write_rounds_stage(root)
    results.write_tables(results.collect(root, tmp_path), tmp_path)
    t = results.read_tables(tmp_path)
    table = rounds.round_table(t["summary"], t["targets"]).set_index(["defense_setting", "round"])
    assert len(table) == 2 * 3
    for r in synthetic.ROUNDS:
        row = table.loc[("(defaults)", r)]
        images = sum(synthetic.rounds_reidentified(r, target) for target in range(4)) * 3  # 3 seeds
        assert (row["n_images"], row["n_targets"], row["n_seeds"]) == (192, 12, 3)
        assert row["reid_rate"] == pytest.approx(100 * images / 192)
        assert row["success_rate"] == pytest.approx(100 * 3 / 12 if r == 0 else 0.0)
        assert row["reid_rate_lo"] < row["reid_rate"] <= row["reid_rate_hi"]
    assert table.loc[("defense=prune ratio=0.3", 312), "epoch"] == pytest.approx(1.0)
    assert table.loc[("(defaults)", 0), "test_acc"] == pytest.approx(95.0)  # mean over the seeds' runs
    defenses = paper.defense_table(t["summary"], t["targets"])
    assert "rounds" not in set(defenses["stage"])
    written = {p.name for p in figures.make_all(tmp_path, tmp_path / "figs")}
    assert {"fig_rounds.png", "table_rounds.md"} <= written
    _assert_real_png(tmp_path / "figs" / "fig_rounds.png")
    md = (tmp_path / "figs" / "table_rounds.md").read_text()
    assert "| undefended | dlg | 312 | 1.00 | 47% [40–54] of 192 |" in md


@pytest.mark.fast
def test_a_job_record_of_another_version_is_one_clear_line(tmp_path):
    import json

    from gradleak.job_record import JobRecord, RecordError

    synthetic.write_datasets_stage(tmp_path / "sweeps")
    path = next((tmp_path / "sweeps" / "datasets").glob("0_*/metrics.json"))
    data = json.loads(path.read_text())
    assert data["version"] == 1
    del data["version"]  # written before the field existed: version 1's layout
    path.write_text(json.dumps(data))
    assert JobRecord.read(path).attacker == "dlg"
    path.write_text(json.dumps({**data, "version": 2}))
    run = _script("collect.py", tmp_path / "sweeps", "--out", tmp_path)
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f"collect: {path}: a job record of version 2; this code reads version 1 (rerun the job, or dvc repro)"]
    path.write_text(json.dumps({**data, "leak_rate": 1.0}))
    with pytest.raises(RecordError, match=r"not a version 1 job record; unknown keys \['leak_rate'\]"):
        JobRecord.read(path)
