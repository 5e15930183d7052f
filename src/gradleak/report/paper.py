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

from gradleak.report.statistics import DEFENSE_KEYS, MEDIANS, RATES, SETTING_KEYS, over_seeds, over_targets

SOURCE = "Zhu et al., NeurIPS 2019"
SURVEY_STAGES = ("datasets", "batch")  # conf/study: surveys of datasets and batch sizes, not verdicts
# Stages judged in figures of their own, outside the defense table: the surveys, and the
# rounds stage (its settings recur at several rounds: report/rounds.py).
APART_STAGES = (*SURVEY_STAGES, "rounds")
NOISE_DEFENDS_VARIANCE = 1e-2  # Sec. 5: variance >= 1e-2 prevents leakage, costs accuracy
PRUNE_DEFENDS_RATIO = 0.2      # Sec. 5: images unrecognizable when the ratio is above 20 %
TABLE_METRICS = ["test_acc", "utility_drop", "baseline_test_acc"]  # per job, over seeds
STRONGEST = "strongest"  # the attacker column of the rows that take each verdict's best attacker
ATTACKER_ORDER = {"dlg": 0, "ig": 1, "dlg adaptive": 2, "ig adaptive": 3, STRONGEST: 9}


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


def defense_table(summary: pd.DataFrame, targets: pd.DataFrame) -> pd.DataFrame:
    """One row per defense setting and attacker of every stage that has defended jobs:
    accuracy (mean and 95% t-interval over seeds), both verdicts over all attacked targets
    of all seeds (Wilson intervals), median MSE and PSNR (bootstrap intervals), in percent
    where rates, and the paper's reference beside them. Settings attacked by several
    attackers get a `strongest` row as well (with_strongest)."""
    defended = set(summary.loc[summary["family"] != "none", "stage"]) - set(APART_STAGES)
    if not defended:
        return pd.DataFrame()
    # The study's undefended reference is a stage of its own; the survey stages are not.
    reference = set(summary["stage"]) - defended - set(APART_STAGES)
    jobs = summary[summary["stage"].isin(defended | reference)].copy()
    for col in ("test_acc", "utility_drop", "baseline_test_acc"):
        if col in jobs:
            jobs[col] = 100 * jobs[col]
    accuracy = over_seeds(jobs, TABLE_METRICS)
    if accuracy.empty:
        return accuracy
    verdicts = over_targets(targets[targets["stage"].isin(defended | reference)])
    for rate in RATES:
        for suffix in ("", "_lo", "_hi"):
            verdicts[rate + suffix] = 100 * verdicts[rate + suffix]
    keys = [k for k in SETTING_KEYS if k in accuracy and k in verdicts]
    table = accuracy.drop(columns="n_seeds").merge(verdicts, on=keys, how="left")
    if "epsilon" in jobs:  # DP-SGD's guarantee: one value per setting (same rate, steps, z)
        table = table.merge(jobs.groupby(keys, dropna=False)["epsilon"].max().reset_index(), on=keys, how="left")
    table = with_strongest(table)
    refs = [paper_reference(f, s, v) for f, s, v in zip(table["family"], table["strength"], table["variance"])]
    table = pd.concat([table, pd.DataFrame(refs, index=table.index)], axis=1)
    table["attacker_rank"] = table["attacker"].map(ATTACKER_ORDER).fillna(5)
    return table.sort_values(["stage", "family_rank", "variance", "strength_rank", "attacker_rank"],
                             ignore_index=True)


def with_strongest(table: pd.DataFrame) -> pd.DataFrame:
    """Adds a `strongest` row per defense setting that more than one attacker attacked: each
    verdict (rate and interval) and each median from the attacker that scored highest on it
    (ties broken by the other verdict, then the median PSNR), named in <rate>_attacker /
    psnr_attacker. The highest of several estimates leans high: an
    error against the defense, the side a defense verdict should err on."""
    if "attacker" not in table:
        return table
    keys = [k for k in DEFENSE_KEYS if k in table]
    best_rows = []
    for _, group in table.groupby(keys, dropna=False, sort=False):
        if group["attacker"].nunique() < 2:
            continue
        group = group.iloc[group["attacker"].map(ATTACKER_ORDER).fillna(5).argsort(kind="stable")]
        best = group.iloc[0].copy()  # accuracy and counts: one training, the same targets
        best["attacker"] = STRONGEST
        for rate, columns in [*((r, [r]) for r in RATES), ("psnr_median", list(MEDIANS))]:
            if group[rate].notna().any():
                # ties: the other verdict, then the median PSNR, then the attacker listed first
                rank = [rate, *(r for r in [*RATES, "psnr_median"] if r != rate)]
                top = group.sort_values(rank, ascending=False, kind="stable", na_position="last").iloc[0]
                for col in columns:
                    for suffix in ("", "_lo", "_hi"):
                        best[col + suffix] = top[col + suffix]
                best[f"{rate.removesuffix('_median')}_attacker"] = top["attacker"]
        best_rows.append(best)
    return pd.concat([table, pd.DataFrame(best_rows)], ignore_index=True) if best_rows else table


def strongest_rows(table: pd.DataFrame) -> pd.DataFrame:
    """One row per defense setting: its `strongest` row, or its only attacker's row."""
    keys = [k for k in DEFENSE_KEYS if k in table]
    ranked = table.assign(_best=table["attacker"].eq(STRONGEST))
    return (ranked.sort_values("_best").groupby(keys, dropna=False, sort=False).tail(1)
            .drop(columns="_best").reset_index(drop=True))


def _with_interval(row, metric: str, fmt: str) -> str:
    """mean ± half-width for symmetric (t) intervals, value [lo–hi] for the others."""
    mean, lo, hi = row.get(metric), row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    if pd.isna(mean):
        return "—"
    if pd.isna(lo) or pd.isna(hi):
        return format(mean, fmt)
    if metric in SYMMETRIC:
        return f"{format(mean, fmt)} ± {format((hi - lo) / 2, fmt)}"
    return f"{format(mean, fmt)} [{format(lo, fmt)}–{format(hi, fmt)}]"


SYMMETRIC = set(TABLE_METRICS)
MARKDOWN_COLUMNS = {  # header: (column, format)
    "Test acc. (%)": ("test_acc", ".1f"),
    "Acc. drop (pp)": ("utility_drop", ".1f"),
    "Re-identified (%)": ("reid_rate", ".0f"),
    "Exact reconstruction (%)": ("success_rate", ".0f"),
    "Median PSNR (dB)": ("psnr_median", ".1f"),
    "ε (DP-SGD)": ("epsilon", ".3g"),
}
HEADER = ["Stage", "Defense", "Strength", "Attacker", "Seeds", "Targets per seed", *MARKDOWN_COLUMNS,
          "Paper acc. (%)", "Paper: defends?", "Source"]


def _paper_acc(row) -> str:
    acc = row["paper_test_acc"]
    return "—" if pd.isna(acc) else f"{acc:.1f} ({row['paper_checked']})"


def _attacker(row) -> str:
    if row.get("attacker") != STRONGEST:
        return str(row.get("attacker", "dlg"))
    best = {row.get(f"{v}_attacker") for v in ("reid_rate", "success_rate")}
    return f"{STRONGEST} ({', '.join(sorted(b for b in best if isinstance(b, str)))})"


def _count(value) -> str:
    return "—" if pd.isna(value) else str(int(value))


def markdown_table(table: pd.DataFrame) -> str:
    """The defense table as markdown, with intervals (NOTES), the paper's reference beside ours."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for _, r in table.iterrows():
        ours = [_with_interval(r, col, fmt) for col, fmt in MARKDOWN_COLUMNS.values()]
        cells = [r["stage"], r["family"], r["strength_label"], _attacker(r),
                 str(r["n_seeds"]), _count(r["n_targets"]), *ours, _paper_acc(r), r["paper_defends"], r["paper_source"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + NOTES


NOTES = f"""Accuracy: mean ± half-width of the 95% t-interval over seeds (a bare mean with one seed).
Verdicts, over every attacked target of every seed (each seed draws its own test images),
with 95% Wilson intervals: re-identified = the reconstruction's nearest neighbour (MSE) among
the true image and its distractors is the true image; exact reconstruction = MSE below the
attack's threshold. Median PSNR with a 95% bootstrap interval. ε: DP-SGD's epsilon at the
training's delta (1e-5) from Opacus's RDP accountant, for the run's sample rate and steps.
Attackers: dlg (DLG with L-BFGS, restarts, stop rules), ig (Inverting Gradients), dlg adaptive
(DLG matching through the defense, attack=adaptive; not run undefended or under Gaussian noise,
where it is DLG itself; under DP-SGD it clips its dummy gradient). strongest: each verdict
from the attacker that scored highest on it (named in brackets); the highest of several
estimates leans high, against the defense.
Paper: {SOURCE}. Its accuracies are for ResNet on CIFAR-100 (Table 2), not our victim:
compare accuracy drops, not absolute values. Every paper entry comes from the paper's
text as quoted to this project and was not checked against the paper itself, hence
"unchecked"; Table 2's per-setting accuracies are not transcribed. "Paper: defends?"
renders the paper's claims (Sec. 5) as text.
"""
