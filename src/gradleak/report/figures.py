"""Seaborn figures and the defense table, built from the collected CSVs only.

Each figure function takes the tables (and, for images, the results folder the snapshot
paths are relative to) and returns a matplotlib Figure, or None with a printed note when
the results it needs are absent. `make_all` writes every figure and table it can.
"""
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from gradleak.report import dp_bound, gallery, rounds
from gradleak.report import verdict_figures as vf
from gradleak.report.claims import markdown_claims
from gradleak.report.collect import read_tables
from gradleak.report.paper import APART_STAGES, defense_table, markdown_table
from gradleak.report.statistics import curve_over_seeds
from gradleak.report.text import write_text

plt.switch_backend("agg")  # files only, also where a display is set
ITERATIONS = "iterations (gradient-match evaluations)"


def families(df: pd.DataFrame, defended_only: bool = False) -> list[str]:
    """The defense families present, in their registered order (family_rank)."""
    ranked = df[["family", "family_rank"]].drop_duplicates().sort_values("family_rank")
    return [f for f in ranked["family"] if not (defended_only and f == "none")]


def family_title(df: pd.DataFrame, family: str) -> str:
    return df.loc[df["family"] == family, "family_title"].iloc[0]


def note(message: str) -> None:
    print(f"figures: {message}")


def _undefended(summary: pd.DataFrame, stage: str) -> pd.DataFrame:
    """The undefended jobs of `stage`, else those of every stage."""
    undefended = summary[summary["family"] == "none"]
    if stage in set(undefended["stage"]):
        return undefended[undefended["stage"] == stage]
    note(f"no undefended '{stage}' stage; using the undefended jobs of all stages")
    return undefended


def _first_job_per_dataset(jobs: pd.DataFrame) -> pd.DataFrame:
    return (jobs.sort_values(["dataset.name", "seed", "job"])
                .drop_duplicates("dataset.name"))


def _image(array: np.ndarray) -> np.ndarray:
    """[C, H, W] in [0, 1] to what imshow takes."""
    img = np.clip(array, 0, 1)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def _step_titles(steps, curve: pd.DataFrame) -> list[str]:
    evals = dict(zip(curve["step"], curve["evals"])) if len(curve) else {}
    return [f"{evals[s]:.0f} iters" if s in evals else f"step {s}" for s in steps]


def reconstructions(summary, curves, results_dir, stage="datasets", target=0):
    """Paper Fig. 3 idea: one row per dataset, a target's reconstruction at each snapshot
    and the ground truth. The first target of the lowest seed: no cherry-picking."""
    jobs = _undefended(summary, stage)
    jobs = _first_job_per_dataset(jobs[jobs["snapshots"].notna()]) if len(jobs) else jobs
    if jobs.empty:
        return note("no snapshots of undefended jobs; skipping reconstructions")
    loaded = [np.load(Path(results_dir) / p) for p in jobs["snapshots"]]
    ncols = max(len(z["steps"]) for z in loaded) + 1
    fig, axes = plt.subplots(len(jobs), ncols, figsize=(1.45 * ncols, 1.6 * len(jobs) + 0.6),
                             squeeze=False)
    for ax_row, (_, job), z in zip(axes, jobs.iterrows(), loaded):
        curve = curves[(curves["stage"] == job["stage"]) & (curves["job"] == job["job"])]
        titles = _step_titles(z["steps"], curve) + ["ground truth"]
        images = [*(r[target] for r in z["recon"]), z["truth"][target]]
        for ax, img, title in zip(ax_row, images, titles):
            ax.imshow(_image(img), cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
        final = float(np.mean((z["recon"][-1][target] - z["truth"][target]) ** 2))
        ax_row[0].set_ylabel(f"{job['dataset.name']}\nfinal MSE {final:.1e}", fontsize=9)
        for ax in ax_row:
            ax.set_xticks([]), ax.set_yticks([])
        for ax in ax_row[len(images):]:
            ax.set_axis_off()
    fig.suptitle(f"DLG reconstructions over iterations, undefended (target {target}, "
                 f"seed {int(jobs['seed'].min())})", fontsize=10)
    fig.tight_layout()
    return fig


def mse_per_dataset(summary, targets, stage="datasets"):
    """Paper's MSE comparison: final MSE of every target per dataset (log scale), the
    success threshold, and the share of targets below it."""
    jobs = _undefended(summary, stage)
    rows = targets.merge(jobs[["stage", "job"]], on=["stage", "job"]) if len(targets) else targets
    if rows.empty:
        return note("no per-target results of undefended jobs; skipping MSE per dataset")
    order = sorted(rows["dataset.name"].unique())
    finite = rows[np.isfinite(rows["mse"]) & (rows["mse"] > 0)]
    fig, ax = plt.subplots(figsize=(1.6 * len(order) + 2.5, 4))
    sns.boxplot(finite, x="dataset.name", y="mse", order=order, color="0.85", fliersize=0,
                log_scale=True, ax=ax)
    sns.stripplot(finite, x="dataset.name", y="mse", order=order, hue="seed", palette="dark",
                  size=4, alpha=0.8, jitter=0.2, ax=ax)
    threshold = jobs["attack.success_mse"].dropna() if "attack.success_mse" in jobs else []
    if len(threshold):
        ax.axhline(threshold.iloc[0], ls="--", color="crimson", lw=1,
                   label=f"success threshold ({threshold.iloc[0]:g})")
    ok = rows.groupby("dataset.name")["success"].agg(["sum", "count"])
    ax.set_xticks(range(len(order)),
                  [f"{d}\n{ok.loc[d, 'sum']}/{ok.loc[d, 'count']} succeeded" for d in order])
    ax.set(xlabel="dataset (one point per target)", title="DLG reconstruction error, undefended",
           ylabel="final MSE per target (pixels in [0, 1], log)")
    ax.legend(title="seed", fontsize=8, title_fontsize=8, loc="best")
    fig.tight_layout()
    return fig




def _defense_stages(summary: pd.DataFrame) -> list[str]:
    """The defense study: every stage but the datasets, batch and rounds sweeps (dvc.yaml
    runs one stage per family, and the undefended reference in a stage of its own)."""
    return sorted(set(summary["stage"]) - set(APART_STAGES))


def _defense_curves(summary, curves, stages):
    """Jobs of the defense stages on their most common dataset, joined with their curves."""
    jobs = summary[summary["stage"].isin(stages)]
    if "attacker" in jobs:  # the attackers' losses differ in kind (L2, cosine): DLG's alone
        jobs = jobs[jobs["attacker"] == "dlg"]
    defended = jobs[jobs["family"] != "none"]
    dataset = defended["dataset.name"].mode().iloc[0] if "dataset.name" in jobs else None
    if dataset is not None:
        jobs = jobs[jobs["dataset.name"] == dataset]
    keys = ["stage", "job", "family", "family_title", "family_rank", "strength", "strength_label",
            "strength_rank", "seed"]
    return curves.merge(jobs[keys], on=["stage", "job"]), dataset


def defense_curves(summary, curves, stage=None):
    """Paper's defense figure: gradient-match loss (top) and MSE (bottom) against
    iterations, one panel per defense family, one line per strength, undefended dashed.
    Lines are geometric means over seeds, bands their 95% t-intervals."""
    stages = [stage] if stage else _defense_stages(summary)
    if not stages or curves.empty:
        return note("no defended jobs with curves; skipping the defense figure")
    if not (summary.loc[summary["stage"].isin(stages), "family"] != "none").any():
        return note(f"stage '{', '.join(stages)}' has no defended jobs; skipping the defense figure")
    data, dataset = _defense_curves(summary, curves, stages)
    panels = families(data, defended_only=True)
    if not panels:
        return note(f"stage '{stage}' has no defended curves; skipping the defense figure")
    metrics = {"loss_median": "gradient-match loss\n(median over targets, log)",
               "mse_median": "reconstruction MSE\n(median over targets, log)"}
    fig, axes = plt.subplots(2, len(panels), figsize=(3.6 * len(panels), 6.4),
                             sharex=True, sharey="row", squeeze=False)
    for col, fam in enumerate(panels):
        _defense_panel(axes[:, col], data, fam, metrics)
    for row, label in enumerate(metrics.values()):
        axes[row, 0].set_ylabel(label)
    fig.supxlabel(ITERATIONS)
    fig.suptitle(f"DLG against defended gradients ({dataset}, stages {', '.join(stages)}; "
                 "geometric mean over seeds, 95% CI band)", fontsize=11)
    fig.tight_layout()
    return fig


def _defense_panel(axes, data, family, metrics):
    runs = data[data["family"] == family]
    base = data[data["family"] == "none"]
    strengths = runs[["strength_rank", "strength_label"]].drop_duplicates().sort_values("strength_rank")
    colors = sns.color_palette("flare", len(strengths))
    for ax, y in zip(axes, metrics):
        for label, color in zip(strengths["strength_label"], colors):
            _band(ax, runs[runs["strength_label"] == label], y, color, label, "-")
        if len(base):
            _band(ax, base, y, "black", "undefended", "--", alpha=0.07)
        ax.set_yscale("log")
    axes[0].set_title(family_title(runs, family))
    axes[0].legend(fontsize=7, title="strength", title_fontsize=7)


def _band(ax, runs, y, color, label, ls, alpha=0.15):
    agg = curve_over_seeds(runs, y, ["family"])
    ax.plot(agg["evals"], agg[y], color=color, ls=ls, lw=1.4, label=label)
    if agg[f"{y}_lo"].notna().any():
        ax.fill_between(agg["evals"], agg[f"{y}_lo"], agg[f"{y}_hi"], color=color,
                        alpha=alpha, lw=0)


def write_defense_table(table: pd.DataFrame, out: Path) -> list[Path]:
    if table.empty:
        note("no defended jobs; skipping the defense table")
        return []
    csv, md = Path(out) / "table_defenses.csv", Path(out) / "table_defenses.md"
    claims = Path(out) / "table_claims.md"
    table.to_csv(csv, index=False)
    md.write_text("# Defenses: test accuracy and leakage verdicts\n\n" + markdown_table(table))
    claims.write_text("# The paper's claims, judged by the study\n\n" + markdown_claims(table))
    return [csv, md, claims]


def _trained(table: pd.DataFrame) -> bool:
    return "test_acc" in table and table["test_acc"].notna().any()


def _study_figures(summary, targets, results, table) -> dict:
    """The verdict figures and one gallery per defended family (file names say gallery)."""
    if table.empty:
        note("no defended jobs; skipping the verdict figures and galleries")
        return {}
    chance = targets["distractors"].max() if "distractors" in targets else None
    figs = {"fig_leak_rates.png": lambda: vf.leak_rates(table, None if chance is None else 1 / (chance + 1)),
            "fig_frontier.png": lambda: vf.frontier(table) if _trained(table)
            else note("no training results (test_acc); skipping the frontier"),
            "fig_thresholds.png": lambda: vf.threshold_curves(vf.strongest_jobs(table, targets)),
            "fig_dpsgd.png": lambda: vf.privacy_curve(table)}
    strongest = vf.strongest_jobs(table, summary)
    for family in families(table, defended_only=True):
        figs[f"fig_gallery_{family}.png"] = (lambda f=family: gallery.gallery(strongest, targets, results, f))
    return figs


def make_all(results: Path, out: Path, datasets_stage="datasets", defense_stage=None) -> list[Path]:
    """Every figure and table the collected CSVs in `results` allow, written to `out`."""
    t = read_tables(results)
    summary, targets, curves = t["summary"], t["targets"], t["curves"]
    if summary.empty:
        raise FileNotFoundError(f"no jobs in {Path(results) / 'summary.csv'}; run collect first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="notebook")
    table = defense_table(summary, targets) if len(targets) else pd.DataFrame()
    figures = {
        "fig_reconstructions.png":
            lambda: reconstructions(summary, curves, results, datasets_stage),
        "fig_mse_per_dataset.png": lambda: mse_per_dataset(summary, targets, datasets_stage),
        "fig_defenses.png": lambda: defense_curves(summary, curves, defense_stage),
        **_study_figures(summary, targets, results, table),
    }
    written = []
    for name, build in figures.items():
        fig = build()
        if fig is not None:
            fig.savefig(out / name, dpi=150, bbox_inches="tight")
            plt.close(fig)
            written.append(out / name)
    return (written + write_defense_table(table, out) + write_rounds(summary, targets, out)
            + write_dp_bound(table, targets, out) + write_text(t["text"], out))


def write_rounds(summary: pd.DataFrame, targets: pd.DataFrame, out: Path) -> list[Path]:
    """fig_rounds.png and table_rounds.md: leakage against the attacked training round."""
    table = rounds.round_table(summary, targets)
    if table.empty:
        note("no rounds stage; skipping the leakage-against-round figure")
        return []
    png, md = Path(out) / "fig_rounds.png", Path(out) / "table_rounds.md"
    fig = rounds.rounds_figure(table)
    fig.savefig(png, dpi=150, bbox_inches="tight")
    plt.close(fig)
    md.write_text("# Leakage along one training run (the rounds stage)\n\n" + rounds.markdown_rounds(table))
    return [png, md]


def write_dp_bound(table: pd.DataFrame, targets: pd.DataFrame, out: Path) -> list[Path]:
    """fig_dp_bound.png and table_dp_bound.md: DP-SGD's re-identification against its bound."""
    if table.empty or "distractors" not in targets or not (table["family"] == "dpsgd").any():
        note("no DP-SGD rows with re-identification; skipping the DP bound")
        return []
    candidates = int(targets["distractors"].max()) + 1
    bounds = dp_bound.bound_table(table, candidates)
    png, md = Path(out) / "fig_dp_bound.png", Path(out) / "table_dp_bound.md"
    fig = dp_bound.bound_figure(bounds, candidates)
    fig.savefig(png, dpi=150, bbox_inches="tight")
    plt.close(fig)
    md.write_text("# DP-SGD against the bound differential privacy puts on re-identification\n\n"
                  + dp_bound.markdown_bound(bounds, candidates))
    return [png, md]
