"""The paper's claims about defenses, judged by the study: `docs/figures/table_claims.md`.

Each claim names the settings it is about and what it says of them (they leak, or they
defend). A setting is judged per verdict (re-identification, exact reconstruction) on its
strongest attacker's rate and 95% Wilson interval (report.paper.with_strongest), by a rule
fixed before the study ran and applied to every setting alike:

- leaks: the interval's lower bound is at least LEAKS_FROM (most images leak);
- defends: its upper bound is at most DEFENDS_UP_TO (almost none does);
- partly: anything between, including intervals too wide to say.

A claim reproduces under a verdict when every one of its settings is judged as the paper
says, is refuted when every one is judged the opposite, and holds partly otherwise.
"""
import pandas as pd

from gradleak.report.paper import SOURCE, strongest_rows

LEAKS_FROM = 50.0     # percent: lower bound of the rate
DEFENDS_UP_TO = 10.0  # percent: upper bound of the rate
VERDICT_NAMES = {"reid_rate": "re-identified", "success_rate": "exact reconstruction"}
OPPOSITE = {"leaks": "defends", "defends": "leaks"}


def _noise(low: float, high: float):
    return lambda r: r["family"].startswith("noise-") and low <= r["variance"] * (1 + 1e-9) and r["variance"] < high


def _prune(low: float, high: float):
    return lambda r: r["family"] == "prune" and low < float(r["strength"]) <= high


# (the claim, where the paper makes it, which settings it is about, what it says of them)
CLAIMS = [
    ("Noise of variance 1e-4 (and 1e-3) does not prevent the leak", "Sec. 5, Fig. 4", _noise(0, 1e-2), "leaks"),
    ("Noise of variance 1e-2 or more defends, at a cost in accuracy", "Sec. 5, Fig. 4; Table 2",
     _noise(1e-2, float("inf")), "defends"),
    ("Pruning up to 20% of the gradient does not defend", "Sec. 5, Fig. 4", _prune(-1, 0.2), "leaks"),
    ("Pruning more than 20% defends, accuracy kept", "Sec. 5, Fig. 4", _prune(0.2, 1), "defends"),
    ("Half precision (fp16) fails to protect", "Sec. 5",
     lambda r: r["family"] == "precision" and r["strength"] == "fp16", "leaks"),
]


def outcome(lo: float, hi: float) -> str:
    if lo >= LEAKS_FROM:
        return "leaks"
    if hi <= DEFENDS_UP_TO:
        return "defends"
    return "partly"


def claim_verdict(outcomes: list[str], says: str) -> str:
    if not outcomes:
        return "not measured"
    if all(o == says for o in outcomes):
        return "reproduces"
    if all(o == OPPOSITE[says] for o in outcomes):
        return "refuted"
    return "partly"


def judged_settings(table: pd.DataFrame) -> pd.DataFrame:
    """One row per defense setting (its strongest row where it has one), with per-verdict
    outcomes (<rate>_outcome)."""
    best = strongest_rows(table)
    for rate in VERDICT_NAMES:
        best[f"{rate}_outcome"] = [outcome(lo, hi) for lo, hi in zip(best[f"{rate}_lo"], best[f"{rate}_hi"])]
    return best.reset_index(drop=True)


def judge_claims(table: pd.DataFrame) -> list[dict]:
    """Per claim: its settings (judged rows) and its verdict under each of the two verdicts."""
    settings = judged_settings(table)
    judged = []
    for claim, where, about, says in CLAIMS:
        rows = settings[[bool(about(r)) for _, r in settings.iterrows()]]
        rows = rows.sort_values(["family_rank", "strength_rank"])
        judged.append({"claim": claim, "where": where, "says": says, "rows": rows,
                       **{rate: claim_verdict(list(rows[f"{rate}_outcome"]), says) for rate in VERDICT_NAMES}})
    return judged


def _rate(r, rate: str) -> str:
    who = r.get(f"{rate}_attacker") if r.get("attacker") == "strongest" else r.get("attacker")
    return (f"{r[rate]:.0f} [{r[f'{rate}_lo']:.0f}–{r[f'{rate}_hi']:.0f}] {r[f'{rate}_outcome']}"
            f" ({who})")


def markdown_claims(table: pd.DataFrame) -> str:
    lines = ["| the paper's claim | it says the settings | re-identified | exact reconstruction "
             "| setting | re-identified (%) | exact (%) | test acc. (%) |", "|---|---|---|---|---|---|---|---|"]
    for c in judge_claims(table):
        head = [f"{c['claim']} ({SOURCE}, {c['where']})", c["says"], f"**{c['reid_rate']}**",
                f"**{c['success_rate']}**"]
        for _, r in c["rows"].iterrows():
            acc = "—" if pd.isna(r.get("test_acc")) else f"{r['test_acc']:.1f}"
            setting = f"{r['family_title']}, {r['strength_label']}"
            cells = [*head, setting, _rate(r, "reid_rate"), _rate(r, "success_rate"), acc]
            lines.append("| " + " | ".join(cells) + " |")
            head = ["", "", "", ""]
        if head[0]:
            lines.append("| " + " | ".join([*head, "not run", "", "", ""]) + " |")
    n = f"{int(table['n_seeds'].max())} seeds x {int(table['n_targets'].max())} targets" if len(table) else ""
    return "\n".join(lines) + "\n\n" + NOTES.format(n=n)


NOTES = f"""Each setting is judged on its strongest attacker per verdict (named in brackets; {{n}} per
setting), rate in % with its 95% Wilson interval: leaks when the lower bound is at least
{LEAKS_FROM:.0f}%, defends when the upper bound is at most {DEFENDS_UP_TO:.0f}%, partly otherwise
(a rule fixed before the study ran). A claim reproduces when every setting it is about is
judged as the paper says, is refuted when every one is judged the opposite, and holds partly
otherwise. The paper's claims come from its text as quoted to this project (unchecked).
"""
