"""Figures of the study's verdicts, from the defense table (report.paper.defense_table) and
the per-target table: leak rate against defense strength (each attacker and the strongest),
the privacy-utility frontier on re-identification, the threshold curves behind the
exact-reconstruction verdict (both under the strongest attacker of each setting) and DP-SGD's
leak rates and accuracy against its epsilon."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from gradleak.report.paper import ATTACKER_ORDER, STRONGEST, strongest_rows
from gradleak.report.statistics import SETTING_KEYS, errorbar

VERDICTS = {"reid_rate": "re-identified", "success_rate": "exact reconstruction (MSE < threshold)"}
ATTACKER_STYLE = {"dlg": ("tab:blue", "-", 1.3), "ig": ("tab:orange", "-", 1.3),
                  "dlg adaptive": ("tab:green", "-", 1.3), "ig adaptive": ("tab:purple", "-", 1.3),
                  STRONGEST: ("black", "--", 2.2)}


def attackers(table: pd.DataFrame) -> list[str]:
    return sorted(table["attacker"].dropna().unique(), key=lambda a: ATTACKER_ORDER.get(a, 5))


def strongest_pick(table: pd.DataFrame) -> pd.DataFrame:
    """(stage, setting, attacker): each setting's most re-identifying attacker."""
    best = strongest_rows(table)
    chosen = best["reid_rate_attacker"] if "reid_rate_attacker" in best else best["attacker"]
    return best[["stage", "setting"]].assign(attacker=chosen.where(chosen.notna(), best["attacker"]))


def strongest_jobs(table: pd.DataFrame, jobs: pd.DataFrame) -> pd.DataFrame:
    """The rows of `jobs` (targets or summary) of each setting's most re-identifying attacker."""
    return jobs.merge(strongest_pick(table), on=["stage", "setting", "attacker"])


def _defended_families(table: pd.DataFrame) -> list[str]:
    ranked = table[["family", "family_rank"]].drop_duplicates().sort_values("family_rank")
    return [f for f in ranked["family"] if f != "none"]


def _with_undefended(table: pd.DataFrame, family: str) -> pd.DataFrame:
    """A family's settings in strength order, led by the undefended setting of the study."""
    rows = table[table["family"] == family].sort_values("strength_rank")
    base = table[table["family"] == "none"].head(1)
    return pd.concat([base, rows], ignore_index=True)


def _asymmetric(rows: pd.DataFrame, col: str) -> np.ndarray:
    lo = (rows[col] - rows[f"{col}_lo"]).fillna(0).clip(lower=0).to_numpy()
    hi = (rows[f"{col}_hi"] - rows[col]).fillna(0).clip(lower=0).to_numpy()
    return np.vstack([lo, hi])


def leak_rates(table: pd.DataFrame, chance: float | None = None):
    """Per defense family (columns) and verdict (rows): the rate (percent, 95% Wilson band)
    against strength, one line per attacker, the strongest dashed."""
    panels = _defended_families(table)
    if not panels:
        return None
    fig, axes = plt.subplots(2, len(panels), figsize=(3.8 * len(panels), 7.2), sharey=True, squeeze=False)
    for col, family in enumerate(panels):
        ticks = _with_undefended(strongest_rows(table), family)
        position = {label: i for i, label in enumerate(ticks["strength_label"])}
        for row, rate in enumerate(VERDICTS):
            ax = axes[row, col]
            for who in attackers(table):
                rows = _with_undefended(table[table["attacker"] == who], family)
                if not (rows["family"] == family).any():
                    continue
                x = rows["strength_label"].map(position)
                color, ls, lw = ATTACKER_STYLE.get(who, ("tab:gray", "-", 1.3))
                ax.plot(x, rows[rate], marker="o", ms=3.5, color=color, ls=ls, lw=lw, label=who)
                ax.fill_between(x, rows[f"{rate}_lo"], rows[f"{rate}_hi"], color=color, alpha=0.1, lw=0)
            if chance is not None and rate == "reid_rate":
                ax.axhline(100 * chance, ls=":", color="0.4", lw=1, label="chance")
            ax.set_xticks(range(len(ticks)), ticks["strength_label"], rotation=35, ha="right", fontsize=8)
            ax.set(ylim=(-3, 103))
        axes[0, col].set_title(ticks["family_title"].iloc[-1], fontsize=10)
    axes[0, 0].set_ylabel("re-identified targets (%)")
    axes[1, 0].set_ylabel("exact reconstructions (%)")
    legend = {}  # every attacker of every panel, once
    for ax in axes.flat:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    order = sorted(legend, key=lambda who: ATTACKER_ORDER.get(who, 10 if who == "chance" else 5))
    fig.legend([legend[who] for who in order], order, title="attacker", fontsize=8, title_fontsize=8,
               loc="upper left", bbox_to_anchor=(1.0, 0.92))
    n = f"{int(table['n_seeds'].max())} seeds x {int(table['n_targets'].max())} targets"
    fig.suptitle(f"Leak rate against defense strength, per attacker ({n} per setting; 95% Wilson bands)",
                 fontsize=11)
    fig.tight_layout()
    return fig


def frontier(table: pd.DataFrame):
    """Privacy-utility frontier: re-identification rate under the strongest attacker (Wilson
    interval) against test accuracy (t-interval over seeds), one point per setting, colour =
    family."""
    table = strongest_rows(table)
    rows = table[table["test_acc"].notna()] if "test_acc" in table else table.iloc[:0]
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(8.5, 5))
    palette = dict(zip(["none", *_defended_families(rows)], ["black", *sns.color_palette("colorblind", 9)]))
    markers = "osD^vP*X"
    for family, color in palette.items():
        part = rows[rows["family"] == family].sort_values("strength_rank")
        for i, (_, r) in enumerate(part.iterrows()):
            one = part.loc[[r.name]]
            xerr = np.vstack([(one["test_acc"] - one["test_acc_lo"]).fillna(0),
                              (one["test_acc_hi"] - one["test_acc"]).fillna(0)])
            label = "undefended" if family == "none" else f"{r['family_title']}: {r['strength_label']}"
            if pd.notna(r.get("epsilon", np.nan)):
                label += f", ε={r['epsilon']:.3g}"
            ax.errorbar(one["test_acc"], one["reid_rate"], xerr=xerr, yerr=_asymmetric(one, "reid_rate"),
                        fmt=markers[i % len(markers)], color=color, ms=7, capsize=3, lw=1, label=label)
    ax.set(xlabel="test accuracy (%) of the model trained under the defense",
           ylabel="re-identified targets (%), strongest attacker", ylim=(-3, 103))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    fig.suptitle("Privacy-utility frontier (accuracy: 95% t-interval over seeds; "
                 "re-identification: 95% Wilson interval over targets)", fontsize=10)
    fig.tight_layout()
    return fig


def privacy_curve(table: pd.DataFrame):
    """DP-SGD against its epsilon (log axis): both verdicts under each attacker and the
    strongest (95% Wilson bands), and the accuracy of the model trained under it (95%
    t-interval over seeds) with the undefended accuracy as a reference line."""
    if "epsilon" not in table:
        return None
    rows = table[(table["family"] == "dpsgd") & table["epsilon"].notna()].sort_values("epsilon")
    if rows.empty:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for who in attackers(rows):
        part = rows[rows["attacker"] == who]
        color, style, width = ATTACKER_STYLE.get(who, ("gray", "-", 1.0))
        for rate, marker in (("reid_rate", "o"), ("success_rate", "s")):
            left.errorbar(part["epsilon"], part[rate], yerr=_asymmetric(part, rate), color=color, ls=style,
                          lw=width, marker=marker, ms=5, capsize=3, label=f"{who}: {VERDICTS[rate]}")
    left.set(xscale="log", xlabel="ε at δ = 1e-5 (Opacus RDP)", ylabel="targets (%)", ylim=(-3, 103),
             title="leak rate (95% Wilson interval)")
    left.legend(fontsize=7)
    acc = strongest_rows(rows)
    if "test_acc" in acc and acc["test_acc"].notna().any():
        right.errorbar(acc["epsilon"], acc["test_acc"], yerr=errorbar(acc, "test_acc"), color="black", marker="o",
                       capsize=3, label="DP-SGD")
        base = table.loc[table["family"] == "none", "test_acc"].dropna()
        if len(base):
            right.axhline(base.iloc[0], color="gray", ls=":", label="undefended")
        right.legend(fontsize=8)
    right.set(xscale="log", xlabel="ε at δ = 1e-5 (Opacus RDP)", ylabel="test accuracy (%)",
              title="accuracy (95% t-interval over seeds)")
    labels = ", ".join(f"{r['strength_label']}: ε={r['epsilon']:.3g}" for _, r in acc.iterrows())
    fig.suptitle(f"DP-SGD, smaller ε = more noise ({labels})", fontsize=10)
    fig.tight_layout()
    return fig


def threshold_curves(targets: pd.DataFrame):
    """Share of targets with PSNR >= t (top) and SSIM >= s (bottom), per family and setting,
    pooled over seeds: where a verdict would land for any threshold. `targets`: one
    attacker's per setting (strongest_targets)."""
    panels = _defended_families(targets)
    if not panels or targets.empty:
        return None
    fig, axes = plt.subplots(2, len(panels), figsize=(3.8 * len(panels), 6.6), sharey=True, squeeze=False)
    grids = {"psnr": np.arange(10, 61, 1.0), "ssim": np.linspace(0, 1, 41)}
    keys = [k for k in SETTING_KEYS if k in targets]
    for col, family in enumerate(panels):
        part = pd.concat([targets[targets["family"] == "none"], targets[targets["family"] == family]])
        settings = part[keys].drop_duplicates().sort_values(["family_rank", "strength_rank"])
        colors = ["black", *sns.color_palette("flare", max(len(settings) - 1, 1))]
        for color, (_, s) in zip(colors, settings.iterrows()):
            rows = part[(part["setting"] == s["setting"]) & (part["stage"] == s["stage"])]
            for row, (metric, grid) in enumerate(grids.items()):
                share = [(rows[metric] >= g).mean() * 100 for g in grid]
                axes[row, col].plot(grid, share, color=color, lw=1.3, label=s["strength_label"])
        axes[0, col].set_title(settings["family_title"].iloc[-1])
        axes[0, col].legend(fontsize=6, title="setting", title_fontsize=6)
    for col in range(len(panels)):
        axes[0, col].set_xlabel("PSNR threshold t (dB)")
        axes[1, col].set_xlabel("SSIM threshold s")
    axes[0, 0].set_ylabel("targets with PSNR >= t (%)")
    axes[1, 0].set_ylabel("targets with SSIM >= s (%)")
    fig.suptitle("Threshold curves: how the share of leaked targets moves with the threshold "
                 "(each setting's most re-identifying attacker)", fontsize=11)
    fig.tight_layout()
    return fig
