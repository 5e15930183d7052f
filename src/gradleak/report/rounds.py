"""Leakage against training progress: the rounds stage attacks every client's defended
update at several rounds (training steps) of one training run per defense setting
(attack.round), so each round's verdicts and the accuracy of the same run sit together.

Each target is one client's update on its local batch of B images. Re-identification is
counted per image (n = targets x B), exact reconstruction per target (the batch's mean
MSE below the threshold, after matching the images), both with Wilson intervals; the
run's test accuracy with a t-interval over seeds.
"""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gradleak.intervals import wilson
from gradleak.report.statistics import t_interval

ROUNDS_STAGE = "rounds"
GROUP = ["defense_setting", "family_title", "strength_label", "family_rank", "attacker"]


def without_round(setting: str) -> str:
    return " ".join(t for t in setting.split() if not t.startswith("attack.round=")) or "(defaults)"


def round_table(summary: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """One row per defense setting, attacker and round: both verdicts with their n and
    intervals (percent), the epochs trained before the round, and the run's accuracy."""
    jobs = summary[summary["stage"] == ROUNDS_STAGE] if "stage" in summary else summary.iloc[:0]
    if jobs.empty or "round" not in jobs or targets.empty:
        return pd.DataFrame()
    jobs = jobs.assign(per_epoch=jobs["steps"] / jobs["epochs"]) if "steps" in jobs else jobs.assign(per_epoch=np.nan)
    keep = ["stage", "job", "round", "attack.batch_size", "per_epoch", *(["test_acc"] if "test_acc" in jobs else [])]
    rows = targets.merge(jobs[keep], on=["stage", "job"])
    rows["defense_setting"] = rows["setting"].map(without_round)
    out = []
    for key, group in rows.groupby([*GROUP, "round"], sort=False, dropna=False):
        out.append({**dict(zip([*GROUP, "round"], key)), **_verdicts(group)})
    table = pd.DataFrame(out)
    return table.sort_values(["family_rank", "defense_setting", "attacker", "round"], ignore_index=True)


def _verdicts(group: pd.DataFrame) -> dict:
    images = group["attack.batch_size"].astype(int)
    k_images, n_images = float((group["reidentified"] * images).round().sum()), int(images.sum())
    k_targets, n_targets = float(group["success"].astype(float).sum()), len(group)
    reid_lo, reid_hi = wilson(k_images, n_images)
    exact_lo, exact_hi = wilson(k_targets, n_targets)
    per_seed = group.drop_duplicates("job")
    acc, acc_lo, acc_hi = t_interval(100 * per_seed["test_acc"]) if "test_acc" in per_seed else (np.nan,) * 3
    return {"epoch": float(group["round"].iloc[0] / group["per_epoch"].iloc[0]),
            "n_seeds": group["seed"].nunique(), "n_images": n_images, "n_targets": n_targets,
            "reid_rate": 100 * k_images / n_images, "reid_rate_lo": 100 * reid_lo, "reid_rate_hi": 100 * reid_hi,
            "success_rate": 100 * k_targets / n_targets, "success_rate_lo": 100 * exact_lo,
            "success_rate_hi": 100 * exact_hi, "test_acc": acc, "test_acc_lo": acc_lo, "test_acc_hi": acc_hi}


def setting_name(row) -> str:
    """"undefended", "pruning 30%": the setting as the defense names it."""
    same = row["family_title"] == row["strength_label"]  # undefended
    return row["strength_label"] if same else f"{row['family_title']} {row['strength_label']}"


def _label(row) -> str:
    acc = f", accuracy {row['test_acc']:.1f}%" if row["test_acc"] == row["test_acc"] else ""
    return f"{setting_name(row)}, {row['attacker']}{acc}"


def rounds_figure(table: pd.DataFrame):
    """Both verdicts against the attacked round (one line per setting and attacker, 95%
    Wilson bars), rounds labelled with the epochs trained before them."""
    if table.empty:
        return None
    rounds = sorted(table["round"].unique())
    position = {r: i for i, r in enumerate(rounds)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    panels = (("reid_rate", "re-identified images", "n_images"), ("success_rate", "exact targets", "n_targets"))
    for ax, (rate, title, n) in zip(axes, panels):
        for i, (_, part) in enumerate(table.groupby(GROUP, sort=False, dropna=False)):
            x = part["round"].map(position).to_numpy() + 0.04 * (i - 2)  # side by side, not on top
            yerr = np.vstack([part[rate] - part[f"{rate}_lo"], part[f"{rate}_hi"] - part[rate]]).clip(min=0)
            ax.errorbar(x, part[rate], yerr=yerr, marker="o", capsize=3, label=_label(part.iloc[0]))
        low, high = int(table[n].min()), int(table[n].max())
        ax.set(title=f"{title} (95% Wilson, n = {low if low == high else f'{low}-{high}'} per point)",
               xlabel="attacked round (training step)", ylim=(-3, 103))
        ax.set_xticks(range(len(rounds)), [_round_label(table, r) for r in rounds])
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=7)
    fig.suptitle("Leakage along one training run: each client's defended update at a round", fontsize=10)
    fig.tight_layout()
    return fig


def _round_label(table: pd.DataFrame, r) -> str:
    epoch = table.loc[table["round"] == r, "epoch"].iloc[0]
    return f"{int(r)}\n({epoch:.2f} epochs in)" if epoch == epoch else str(int(r))


def _accuracy(r) -> str:
    if r["test_acc"] != r["test_acc"]:
        return "—"
    if r["test_acc_hi"] != r["test_acc_hi"]:  # one seed: no interval
        return f"{r['test_acc']:.1f}"
    return f"{r['test_acc']:.1f} ± {r['test_acc_hi'] - r['test_acc']:.1f}"


def markdown_rounds(table: pd.DataFrame) -> str:
    lines = ["| setting | attacker | round | epochs in | re-identified images | exact targets | accuracy |",
             "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        acc = _accuracy(r)
        lines.append(f"| {setting_name(r)} | {r['attacker']} | {int(r['round'])} | {r['epoch']:.2f} "
                     f"| {r['reid_rate']:.0f}% [{r['reid_rate_lo']:.0f}–{r['reid_rate_hi']:.0f}] of {r['n_images']} "
                     f"| {r['success_rate']:.0f}% [{r['success_rate_lo']:.0f}–{r['success_rate_hi']:.0f}] of "
                     f"{r['n_targets']} | {acc} |")
    return "\n".join(lines) + "\n"
