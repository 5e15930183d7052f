"""The text study (task=text): its table, leak-rate figure, gallery and the paper's claims
judged on text, from results/text.csv.

One row of the table is a defense setting and an attacker, pooled over seeds (each seed
draws its own 16 sentences): exact sentences and re-identified sentences with Wilson 95%
intervals over the sentences, token accuracy with a t interval over the sentences, mean
ROUGE-1/2/L F1. Each setting's `strongest` row takes each verdict from its best attacker, as
the image table does (report/paper.py). The gallery is the paper's text figure: one true
sentence and what each setting's strongest attacker recovered of it, wrong tokens struck.
"""
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from gradleak.intervals import wilson
from gradleak.report.claims import markdown_claims
from gradleak.report.paper import strongest_rows
from gradleak.report.statistics import t_interval

SETTING = ["stage", "setting", "family", "family_title", "family_rank", "strength", "strength_label",
           "strength_rank", "variance"]
# the image table's names (report/paper.py), in percent, so report/claims.py judges text alike
RATES = {"reid_rate": "reidentified", "success_rate": "success"}


def text_table(text: pd.DataFrame) -> pd.DataFrame:
    """Per setting and attacker, then each setting's `strongest` row (each verdict from its
    best attacker, named in <rate>_attacker): n, rates in % with Wilson intervals, token
    accuracy in % with its t interval, ROUGE means; sorted by family and strength."""
    rows = []
    for key, g in text.groupby([*SETTING, "attacker"], dropna=False, sort=False):
        seeds = g["seed"].nunique()
        row = dict(zip([*SETTING, "attacker"], key)) | {"n": len(g), "n_seeds": seeds, "n_targets": len(g) // seeds}
        for rate, col in RATES.items():
            k = int(g[col].astype(float).round().sum())
            lo, hi = wilson(k, len(g))
            row |= {rate.removesuffix("_rate"): k, rate: 100 * k / len(g), f"{rate}_lo": 100 * lo,
                    f"{rate}_hi": 100 * hi}
        acc = t_interval(100 * g["token_acc"])
        row["token_acc"], row["token_acc_lo"], row["token_acc_hi"] = acc
        for r in ("rouge1_f", "rouge2_f", "rougeL_f"):
            row[r] = float(g[r].mean())
        rows.append(row | training_cost(g))
    table = pd.DataFrame(rows)
    strongest = []
    for _, g in table.groupby(SETTING, dropna=False, sort=False):
        if g["attacker"].nunique() < 2:
            continue  # its one attacker is its strongest (report.paper.strongest_rows)
        best = g.iloc[0].to_dict() | {"attacker": "strongest"}
        for metric in (*RATES, "token_acc"):
            top = g.sort_values(metric, ascending=False, kind="stable").iloc[0]
            best |= {c: top[c] for c in (metric, f"{metric}_lo", f"{metric}_hi")}
            best |= {metric.removesuffix("_rate"): top.get(metric.removesuffix("_rate")), f"{metric}_attacker":
                     top["attacker"]}
        strongest.append(best)
    table = pd.concat([table, pd.DataFrame(strongest)], ignore_index=True)
    table["_last"] = table["attacker"].eq("strongest")
    return (table.sort_values(["family_rank", "strength_rank", "_last", "attacker"]).drop(columns="_last")
            .reset_index(drop=True))


def training_cost(g: pd.DataFrame) -> dict:
    """The setting's defended training over its seeds (one training per seed): held-out
    masked-token accuracy in % (mean, t 95% over seeds), its drop from the undefended
    training of the same seeds in points, DP-SGD's epsilon; {} when the jobs did not train."""
    if "test_acc" not in g or g["test_acc"].isna().all():
        return {}
    per_seed = g.groupby("seed")[["test_acc", "utility_drop"]].first()
    acc = t_interval(100 * per_seed["test_acc"])
    eps = g["epsilon"].max() if "epsilon" in g else float("nan")
    return {"test_acc": acc[0], "test_acc_lo": acc[1], "test_acc_hi": acc[2],
            "utility_drop": 100 * per_seed["utility_drop"].mean(), "epsilon": eps}


def _accuracy(r) -> str:
    if pd.isna(r.get("test_acc", float("nan"))):
        return "not trained"
    ci = "" if pd.isna(r["test_acc_lo"]) else f" [{r['test_acc_lo']:.1f}, {r['test_acc_hi']:.1f}]"
    eps = "" if pd.isna(r.get("epsilon", float("nan"))) else f", ε = {r['epsilon']:.3g}"
    return f"{r['test_acc']:.1f}%{ci} ({-r['utility_drop']:+.1f} pp{eps})"


def _rate(r, rate: str) -> str:
    k = int(r[rate.removesuffix("_rate")])
    return f"{k}/{int(r['n'])} = {r[rate]:.0f}% [{r[f'{rate}_lo']:.0f}, {r[f'{rate}_hi']:.0f}]"


def markdown_table(table: pd.DataFrame) -> str:
    lines = ["| defense | strength | attacker | re-identified [95% CI] | exact sentence [95% CI] |"
             " token accuracy [95% CI] | ROUGE-1 / 2 / L | trained: masked-token acc. [95% CI] (change) |",
             "|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lo, hi = r["token_acc_lo"], r["token_acc_hi"]
        acc = f"{r['token_acc']:.1f}%" + ("" if pd.isna(lo) else f" [{lo:.1f}, {hi:.1f}]")
        rouge = f"{r['rouge1_f']:.2f} / {r['rouge2_f']:.2f} / {r['rougeL_f']:.2f}"
        who = r["attacker"]
        if who == "strongest":
            who = f"**strongest** ({r['reid_rate_attacker']})"
        lines.append(f"| {r['family_title']} | {r['strength_label']} | {who} | {_rate(r, 'reid_rate')} |"
                     f" {_rate(r, 'success_rate')} | {acc} | {rouge} | {_accuracy(r)} |")
    n = int(table["n"].max()) if len(table) else 0
    return ("Text study: sentences of the bundled corpus (8-16 tokens, drawn by each seed), DLG's language"
            f" victim at its initial weights; n = {n} sentences per row (seeds pooled). Rates: Wilson 95%;"
            " token accuracy: t 95% over sentences; re-identified: the true sentence ranks first among itself"
            " and 999 test sentences by ROUGE-L. The strongest row takes each verdict from its best attacker"
            " (re-identification's named). Trained: the text victim trained under the defense (the study's"
            " text training profile, docs/text.md), its masked-token accuracy on held-out sentences, mean and"
            " t 95% over seeds, and its change from the undefended training of the same seeds (percentage"
            " points); ε: DP-SGD's epsilon of that training.\n\n" + "\n".join(lines) + "\n")


def leakage_figure(table: pd.DataFrame):
    """Per defense family, both verdicts of each setting's strongest attacker against its
    strength, and the held-out accuracy of the victim trained under it."""
    best = strongest_rows(table)
    undefended = best[best["family"] == "none"]
    families = [f for f in best.sort_values("family_rank")["family"].unique() if f != "none"]
    if not families:
        return None
    fig, axes = plt.subplots(1, len(families), figsize=(3.4 * len(families), 3.2), squeeze=False, sharey=True)
    colors = sns.color_palette("colorblind", 2)
    for ax, family in zip(axes[0], families):
        rows = pd.concat([undefended, best[best["family"] == family]]).sort_values(["family_rank", "strength_rank"])
        x = range(len(rows))
        for (rate, label), color, marker in zip((("reid_rate", "re-identified"), ("success_rate", "exact sentence")),
                                                colors, "os"):
            y = rows[rate]
            ax.errorbar(x, y, yerr=[y - rows[f"{rate}_lo"], rows[f"{rate}_hi"] - y], color=color, marker=marker,
                        capsize=3, label=label)
        if "test_acc" in rows and rows["test_acc"].notna().any():  # what the defense costs the trained victim
            ax.errorbar(x, rows["test_acc"], yerr=[rows["test_acc"] - rows["test_acc_lo"],
                                                    rows["test_acc_hi"] - rows["test_acc"]],
                        color="0.4", marker="^", linestyle="--", capsize=3, label="masked-token acc. (trained)")
        ax.set_xticks(list(x), rows["strength_label"], rotation=30, ha="right", fontsize=8)
        ax.set_title(rows[rows["family"] == family]["family_title"].iloc[0], fontsize=10)
        ax.set_ylim(-5, 105)
    axes[0, 0].set_ylabel("% of sentences (strongest attacker, 95% CI)")
    axes[0, 0].legend(fontsize=8, loc="lower left")
    fig.suptitle("Text: leakage against each defense's strength", fontsize=11)
    fig.tight_layout()
    return fig


def gallery_markdown(text: pd.DataFrame, table: pd.DataFrame, sentences: int = 2) -> str:
    """The first sentences of seed 0, and each setting's recovery by its strongest attacker
    (re-identification's best), wrong tokens struck through."""
    best = strongest_rows(table)
    first = text[text["seed"] == text["seed"].min()]
    lines = ["Text gallery: the true sentence, then what each defense setting's strongest attacker"
             " recovered (~~wrong tokens~~ struck).", ""]
    for target in sorted(first["target"].unique())[:sentences]:
        truth = first[first["target"] == target]["truth"].iloc[0]
        lines += [f"**true**: {truth}", "", "| defense | strength | attacker | recovered |", "|---|---|---|---|"]
        for _, r in best.iterrows():
            rows = first[(first["target"] == target) & (first["setting"] == r["setting"])]
            if rows.empty:
                continue
            pick = rows.sort_values(["token_acc"], ascending=False).iloc[0]
            text = marked(str(pick["recovered"]), eval_list(pick["wrong"]))
            lines.append(f"| {r['family_title']} | {r['strength_label']} | {pick['attacker']} |"
                         f" {text.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)


def marked(recovered: str, wrong, left: str = "~~", right: str = "~~") -> str:
    """The recovered text with its wrong tokens (positions `wrong`) between left and right."""
    wrong = set(wrong)
    return " ".join(f"{left}{w}{right}" if i in wrong else w for i, w in enumerate(recovered.split(" ")))


def eval_list(value) -> list[int]:
    """A list column read back from CSV ("[1, 4]")."""
    if isinstance(value, list):
        return value
    text = str(value).strip("[] ")
    return [int(v) for v in text.split(",") if v.strip()]


def write_text(text: pd.DataFrame, out: Path) -> list[Path]:
    """table_text.md/.csv, fig_text_leakage.png and text_gallery.md, when there are text jobs."""
    if text.empty:
        return []
    table = text_table(text)
    paths = [out / "table_text.md", out / "table_text.csv", out / "text_gallery.md", out / "table_text_claims.md"]
    paths[0].write_text(markdown_table(table))
    table.to_csv(paths[1], index=False)
    paths[2].write_text(gallery_markdown(text, table))
    paths[3].write_text("The paper's claims about defenses (made on images), judged on text by the image study's"
                        " rule (report/claims.py).\n\n" + markdown_claims(table))
    fig = leakage_figure(table)
    if fig is not None:
        fig.savefig(out / "fig_text_leakage.png", dpi=150, bbox_inches="tight")
        plt.close(fig)
        paths.append(out / "fig_text_leakage.png")
    return paths
