"""What the DLG paper says about each defense setting, beside what we measured.

Source: Zhu, Liu, Han, "Deep Leakage from Gradients", NeurIPS 2019, Sec. 5 "Defense
strategies", Fig. 4 and Table 2 (accuracy of ResNet on CIFAR-100 under each defense).
Only claims quoted to the project (issue 5) are encoded, and none was checked against
the paper itself: every entry is marked "unchecked". Table 2's per-setting accuracies
are not transcribed; its undefended accuracy (about 76.3 %) is. The text's claims are
rendered as text with their section.
"""
import numpy as np
import pandas as pd

from gradleak.report.statistics import over_seeds

SOURCE = "Zhu et al., NeurIPS 2019"
NOISE_DEFENDS_VARIANCE = 1e-2  # Sec. 5: variance >= 1e-2 prevents leakage, costs accuracy
PRUNE_DEFENDS_RATIO = 0.2      # Sec. 5: images unrecognizable when the ratio is above 20 %
TABLE_METRICS = ["test_acc", "success_rate", "mse_median", "utility_drop"]


def paper_reference(family: str, strength=None, variance: float = np.nan) -> dict:
    """The paper's accuracy (percent; NaN where not transcribed), its claim on whether
    the setting defends against DLG, where that comes from, and whether it was checked."""
    ref = {"paper_test_acc": np.nan, "paper_defends": "not studied by the paper",
           "paper_source": "", "paper_checked": "unchecked"}
    if family == "none":
        return ref | {"paper_test_acc": 76.3, "paper_defends": "no (undefended)",
                      "paper_source": f"{SOURCE}, Table 2 (ResNet, CIFAR-100)"}
    if family.startswith("noise-"):
        yes = variance >= NOISE_DEFENDS_VARIANCE * (1 - 1e-9)
        claim = "yes, accuracy drops" if yes else "no"
        return ref | {"paper_defends": f"{claim} (paper claim: variance >= 1e-2 defends)",
                      "paper_source": f"{SOURCE}, Sec. 5, Fig. 4; accuracy in Table 2"}
    if family == "prune":
        yes = float(strength) > PRUNE_DEFENDS_RATIO
        claim = "yes, accuracy kept" if yes else "no"
        return ref | {"paper_defends": f"{claim} (paper claim: ratio > 20% defends)",
                      "paper_source": f"{SOURCE}, Sec. 5, Fig. 4"}
    if family == "precision" and strength == "fp16":
        return ref | {"paper_defends": "no (paper claim: half precision fails to protect)",
                      "paper_source": f"{SOURCE}, Sec. 5; accuracy in Table 2"}
    if family == "precision" and strength == "int8":
        return ref | {"paper_defends": "in Table 2, not transcribed",
                      "paper_source": f"{SOURCE}, Table 2"}
    return ref


def defense_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per defense setting of every stage that has defended jobs: our metrics
    (mean and 95% t-interval over seeds, accuracies and success in percent) and the
    paper's reference beside them."""
    defended = summary.loc[summary["family"] != "none", "stage"].unique()
    rows = summary[summary["stage"].isin(defended)].copy()
    for col in ("test_acc", "success_rate", "utility_drop"):
        if col in rows:
            rows[col] = 100 * rows[col]
    table = over_seeds(rows, TABLE_METRICS)
    if table.empty:
        return table
    refs = [paper_reference(f, s, v) for f, s, v in zip(table["family"], table["strength"], table["variance"])]
    table = pd.concat([table, pd.DataFrame(refs, index=table.index)], axis=1)
    return table.sort_values(["stage", "family_rank", "variance", "strength_rank"], ignore_index=True)


def _with_interval(row, metric: str, fmt: str) -> str:
    mean, lo, hi = row.get(metric), row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    if pd.isna(mean):
        return "—"
    if pd.isna(lo) or pd.isna(hi):
        return format(mean, fmt)
    return f"{format(mean, fmt)} ± {format((hi - lo) / 2, fmt)}"


MARKDOWN_COLUMNS = {  # header: (column, format)
    "Test acc. (%)": ("test_acc", ".1f"),
    "Acc. drop (pp)": ("utility_drop", ".1f"),
    "Attack success (%)": ("success_rate", ".0f"),
    "Median MSE": ("mse_median", ".1e"),
}
HEADER = ["Stage", "Defense", "Strength", "Seeds", *MARKDOWN_COLUMNS,
          "Paper acc. (%)", "Paper: defends?", "Source"]


def _paper_acc(row) -> str:
    acc = row["paper_test_acc"]
    return "—" if pd.isna(acc) else f"{acc:.1f} ({row['paper_checked']})"


def markdown_table(table: pd.DataFrame) -> str:
    """The defense table as markdown: mean ± 95% t-interval half-width over seeds
    (a bare mean where there is a single seed), the paper's reference beside ours."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for _, r in table.iterrows():
        ours = [_with_interval(r, col, fmt) for col, fmt in MARKDOWN_COLUMNS.values()]
        cells = [r["stage"], r["family"], r["strength_label"],
                 str(r["n_seeds"]), *ours, _paper_acc(r), r["paper_defends"], r["paper_source"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + NOTES


NOTES = f"""Ours: mean ± half-width of the 95% t-interval over seeds (a bare mean with one seed).
Attack success: share of targets reconstructed with MSE below the attack's threshold.
Paper: {SOURCE}. Its accuracies are for ResNet on CIFAR-100 (Table 2), not our victim:
compare accuracy drops, not absolute values. Every paper entry comes from the paper's
text as quoted to this project and was not checked against the paper itself, hence
"unchecked"; Table 2's per-setting accuracies are not transcribed. "Paper: defends?"
renders the paper's claims (Sec. 5) as text.
"""
