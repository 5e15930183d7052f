"""What the DLG paper says about each defense setting, beside what we measured.

Source: Zhu, Liu, Han, "Deep Leakage from Gradients", NeurIPS 2019, Sec. 5 "Defense
strategies", Fig. 4 and Table 2 (accuracy of ResNet on CIFAR-100 under each defense).
Only the claims quoted in the project brief are encoded. Table 2's per-setting
accuracies were not checked against the paper, so none is transcribed; the one number
given (the undefended accuracy, about 76.3 %) is marked unchecked. Claims that the text
states are rendered as text with their section.
"""
import numpy as np
import pandas as pd

from gradleak.aggregate import over_seeds
from gradleak.results import FAMILY_ORDER, noise_variance, strength_label, strength_rank

SOURCE = "Zhu et al., NeurIPS 2019"
NOISE_DEFENDS_VARIANCE = 1e-2  # Sec. 5: variance >= 1e-2 prevents leakage, costs accuracy
PRUNE_DEFENDS_RATIO = 0.2      # Sec. 5: images unrecognizable when the ratio is above 20 %
TABLE_METRICS = ["test_acc", "success_rate", "mse_median", "utility_drop"]


def paper_reference(family: str, strength=None) -> dict:
    """The paper's accuracy (percent; NaN where not transcribed), its claim on whether
    the setting defends against DLG, where that comes from, and whether it was checked."""
    ref = {"paper_test_acc": np.nan, "paper_defends": "not studied by the paper",
           "paper_source": "", "paper_checked": "unchecked"}
    if family == "none":
        return ref | {"paper_test_acc": 76.3, "paper_defends": "no (undefended)",
                      "paper_source": f"{SOURCE}, Table 2 (ResNet, CIFAR-100)"}
    if family.startswith("noise-"):
        var = noise_variance(family.removeprefix("noise-"), float(strength))
        yes = var >= NOISE_DEFENDS_VARIANCE * (1 - 1e-9)
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


def _variance(row) -> float:
    if not str(row["family"]).startswith("noise-"):
        return np.nan
    return noise_variance(row["family"].removeprefix("noise-"), float(row["strength"]))


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
    table.insert(table.columns.get_loc("strength") + 1, "variance", table.apply(_variance, axis=1))
    refs = [paper_reference(f, s) for f, s in zip(table["family"], table["strength"])]
    table = pd.concat([table, pd.DataFrame(refs, index=table.index)], axis=1)
    return table.sort_values(["stage", "family", "variance", "strength"],
                             key=_sort_key, ignore_index=True)


def _sort_key(col: pd.Series) -> pd.Series:
    if col.name == "family":
        return col.map(lambda f: FAMILY_ORDER.index(f) if f in FAMILY_ORDER else len(FAMILY_ORDER))
    return col.map(strength_rank) if col.name == "strength" else col


def _with_interval(row, metric: str, fmt: str) -> str:
    mean, lo, hi = row[metric], row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    if pd.isna(mean):
        return "—"
    if pd.isna(lo) or pd.isna(hi):
        return format(mean, fmt)
    return f"{format(mean, fmt)} ± {format((hi - lo) / 2, fmt)}"


MARKDOWN_COLUMNS = {  # header: (metric or None, format)
    "Test acc. (%)": ("test_acc", ".1f"),
    "Acc. drop (pp)": ("utility_drop", ".1f"),
    "Attack success (%)": ("success_rate", ".0f"),
    "Median MSE": ("mse_median", ".1e"),
}


def markdown_table(table: pd.DataFrame) -> str:
    """The defense table as markdown: mean ± 95% t-interval half-width over seeds
    (a bare mean where there is a single seed), the paper's reference beside ours."""
    header = ["Stage", "Defense", "Strength", "Seeds", *MARKDOWN_COLUMNS,
              "Paper acc. (%)", "Paper: defends?", "Source"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, r in table.iterrows():
        paper_acc = "—" if pd.isna(r["paper_test_acc"]) else f"{r['paper_test_acc']:.1f} ({r['paper_checked']})"
        cells = [r["stage"], r["family"], strength_label(r["family"], r["strength"]),
                 str(r["n_seeds"]),
                 *(_with_interval(r, m, f) if m in r else "—" for m, f in MARKDOWN_COLUMNS.values()),
                 paper_acc, r["paper_defends"], r["paper_source"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + NOTES


NOTES = f"""Ours: mean ± half-width of the 95% t-interval over seeds (no interval with one seed).
Attack success = share of targets reconstructed with MSE below the attack's threshold.
Paper: {SOURCE}. Its accuracies are for ResNet on CIFAR-100 (Table 2), not our victim,
so compare accuracy drops, not absolute values. Table 2's per-setting accuracies were not
checked against the paper and are not transcribed; "unchecked" marks a number that was
not verified against it. "Paper: defends?" renders the paper's text claims (Sec. 5).
"""
