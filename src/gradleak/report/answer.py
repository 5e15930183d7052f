"""The study's answer in sentences and small tables, generated from the committed tables
(docs/figures*/table_defenses.csv, table_text.csv, table_rounds.md, table_dp_bound.md).

README.md and docs/study.md carry these sections between markers, `<!-- answer:NAME -->` and
`<!-- /answer:NAME -->`, so that no rate, interval or accuracy is typed by hand:
`scripts/answer.py` writes docs/answer.md and fills the marked sections, and tests/test_answer.py
fails when a marked section differs from what the tables give, or when a rate or an accuracy
stands outside one. Verdict words are the claim rule's (report/claims.py).
"""
import re
from pathlib import Path

import pandas as pd

from gradleak.report.claims import VERDICT_NAMES, judge_claims, markdown_claims, outcome
from gradleak.report.paper import STRONGEST, strongest_rows

LATER = ("soteria", "mixup", "instahide", "precode")  # the later defenses' families
SECURE = "secure-"  # the secure-aggregation families' prefix
ATTACKERS = {"dlg": "DLG", "ig": "IG", "dlg adaptive": "adaptive DLG"}
# What an attacker of a later defense is handed beyond the threat model (issue "No oracle"):
# said wherever its rate is, until the attack no longer needs it.
ORACLE = {"mixup": "the decode is given the client's mixing (which images, which coefficients), an upper "
                   "bound no server reaches; it decides no claim",
          "instahide": "the decode is given the client's mixing and flip centre, an upper bound no server "
                       "reaches; it decides no claim"}
MARK = re.compile(r"<!-- answer:(?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- /answer:(?P=name) -->", re.S)


# --- numbers as the answer writes them ---------------------------------------------------------

def rate(r, name: str) -> str:
    """A rate in % with its 95% Wilson interval: `94% [83–98]`."""
    return f"{r[name]:.0f}% [{r[f'{name}_lo']:.0f}–{r[f'{name}_hi']:.0f}]"


def accuracy(r) -> str:
    """Test accuracy, mean ± half-width of its t-interval over seeds: `97.4 ± 0.7%`."""
    if pd.isna(r.get("test_acc")):
        return "not measured (not trained in the stage)"
    if pd.isna(r.get("test_acc_lo")):
        return f"{r['test_acc']:.1f}%"
    return f"{r['test_acc']:.1f} ± {(r['test_acc_hi'] - r['test_acc_lo']) / 2:.1f}%"


def attacker(r, name: str) -> str:
    """Who scored the row's `name` rate (a strongest row names its attacker per verdict)."""
    who = r.get(f"{name}_attacker") if r["attacker"] == STRONGEST else r["attacker"]
    return ATTACKERS.get(who, str(who))


def verdict(r, name: str) -> str:
    return outcome(r[f"{name}_lo"], r[f"{name}_hi"])


def n_of(r) -> int:
    return int(r["n_seeds"] * r["n_targets"])


def _setting(r) -> str:
    return r["strength_label"] if r["family"] == "none" else f"{r['family_title']}, {r['strength_label']}"


def _grouped(rows: list) -> str:
    """Settings listed by family: `undefended; Gradient pruning at 10%, 30% and 70%`."""
    families: dict[str, list[str]] = {}
    for r in rows:
        families.setdefault(r["family_title"], []).append(r["strength_label"])
    return "; ".join(name if labels == [name] else f"{name} at {_and(labels)}" for name, labels in families.items())


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --- the tables the answer is drawn from ---------------------------------------------------------

def read_tables(folders: list[Path]) -> dict[str, pd.DataFrame]:
    """The defense tables of every folder (one frame, `folder` naming each row's) and the text table."""
    defenses, text = [], []
    for folder in map(Path, folders):
        if (folder / "table_defenses.csv").exists():
            defenses.append(pd.read_csv(folder / "table_defenses.csv").assign(folder=folder.name))
        if (folder / "table_text.csv").exists():
            text.append(pd.read_csv(folder / "table_text.csv"))
    table = pd.concat(defenses, ignore_index=True) if defenses else pd.DataFrame()
    return {"defenses": table, "text": pd.concat(text, ignore_index=True) if text else pd.DataFrame()}


def parts(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The defense table split as the answer tells it: the paper's defenses (with DP-SGD), the
    later defenses, secure aggregation; each with the undefended reference of its own folder."""
    family = table["family"]
    later_folders = set(table.loc[family.isin(LATER), "folder"])
    secure = family.str.startswith(SECURE)
    later = family.isin(LATER) | ((family == "none") & table["folder"].isin(later_folders))
    main = ~secure & ~later
    return {"main": table[main], "later": table[later], "secure": table[secure]}


def best(table: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: its strongest attacker's, in the table's order."""
    return strongest_rows(table).sort_values(["family_rank", "strength_rank"], kind="stable").reset_index(drop=True)


# --- the sections --------------------------------------------------------------------------------

def claim_bullets(main: pd.DataFrame) -> list[str]:
    """Per paper claim: its verdict under each of the two verdicts, and the strongest defense
    setting it is about (its last row), with the strongest attacker's rates."""
    lines = []
    for c in judge_claims(main):
        if c["rows"].empty:
            continue
        r = c["rows"].iloc[-1]
        lines.append(
            f"- *{c['claim']}*: **{c['reid_rate']}** by re-identification, **{c['success_rate']}** by exact "
            f"reconstruction. At the strongest defense it covers ({_setting(r)}): re-identified "
            f"{rate(r, 'reid_rate')} by {attacker(r, 'reid_rate')}, exact {rate(r, 'success_rate')} by "
            f"{attacker(r, 'success_rate')}, "
            f"n = {n_of(r)}; test accuracy {accuracy(r)}.")
    return lines


def dpsgd_bullet(main: pd.DataFrame) -> list[str]:
    rows = best(main[main["family"] == "dpsgd"])
    if rows.empty:
        return []
    per_z = "; ".join(f"{r['strength_label']}: re-identified {rate(r, 'reid_rate')}, exact {rate(r, 'success_rate')}, "
                      f"test accuracy {accuracy(r)}, ε = {r['epsilon']:.3g}" for _, r in rows.iterrows())
    return [f"- *DP-SGD* (strongest of the attackers, n = {n_of(rows.iloc[0])} each): {per_z}."]


def text_bullet(text: pd.DataFrame) -> list[str]:
    if text.empty:
        return []
    rows = strongest_rows(text).sort_values(["family_rank", "strength_rank"], kind="stable")
    leaks = [r for _, r in rows.iterrows() if verdict(r, "success_rate") == "leaks"]
    rest = [r for _, r in rows.iterrows() if verdict(r, "success_rate") != "leaks"]
    n = int(rows["n"].max())
    said = (f"- *Text* (sentences of the bundled corpus, one per update, attacker `text`, n = {n} per setting): "
            f"exact recovery leaks by the claim rule{': ' + _grouped(leaks) if leaks else ' nowhere'}.")
    if rest:
        said += " Elsewhere: " + "; ".join(f"{_setting(r)}: exact {rate(r, 'success_rate')}, re-identified "
                                           f"{rate(r, 'reid_rate')}" for r in rest) + "."
    return [said]


def later_bullets(later: pd.DataFrame) -> list[str]:
    lines = []
    for _, r in best(later[later["family"].isin(LATER)]).iterrows():
        oracle = f" Note: {ORACLE[r['family']]}." if r["family"] in ORACLE else ""
        lines.append(f"- *{_setting(r)}*: re-identified {rate(r, 'reid_rate')} ({attacker(r, 'reid_rate')}), "
                     f"exact {rate(r, 'success_rate')} ({attacker(r, 'success_rate')}), n = {n_of(r)}; "
                     f"test accuracy {accuracy(r)}.{oracle}")
    return lines


def secure_bullets(secure: pd.DataFrame) -> list[str]:
    lines = []
    for _, rows in best(secure).groupby("family", sort=False):
        title = rows["family_title"].iloc[0]
        rows = rows.sort_values("strength")
        per_n = ", ".join(f"N = {int(r['strength'])}: {rate(r, 'reid_rate')} ({attacker(r, 'reid_rate')})"
                          for _, r in rows.iterrows())
        exact = ", ".join(f"{rate(r, 'success_rate')}" for _, r in rows.iterrows())
        ns = ", ".join(str(int(n)) for n in rows["strength"])
        lines.append(f"- *{title}* (the mean of N clients' one-image updates, n = {n_of(rows.iloc[0])} aggregates "
                     f"per N): re-identified {per_n}; exact at N = {ns}: {exact}.")
    return lines


def attackers_table(main: pd.DataFrame) -> str:
    """Per defense setting, each attacker's rates: which attacker decides each verdict."""
    shown = [a for a in ATTACKERS if a in set(main["attacker"])]
    head = ["setting", *(f"re-identified, {ATTACKERS[a]}" for a in shown),
            *(f"exact, {ATTACKERS[a]}" for a in shown), "test accuracy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in best(main).iterrows():
        rows = main[main["setting"] == r["setting"]].set_index("attacker")
        cells = [rate(rows.loc[a], name) if a in rows.index else "—"
                 for name in VERDICT_NAMES for a in shown]
        lines.append("| " + " | ".join([_setting(r), *cells, accuracy(r)]) + " |")
    return "\n".join(lines) + "\n"


def later_table(later: pd.DataFrame) -> str:
    """Each later defense by the claim rule, on its strongest attacker per verdict."""
    head = ["setting", "re-identified", "exact", "strongest attacker", "test accuracy", "verdict: re-identified",
            "verdict: exact"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in best(later).iterrows():
        who = attacker(r, "reid_rate") + ("" if r["family"] not in ORACLE else " (given the mixing)")
        lines.append("| " + " | ".join([_setting(r), rate(r, "reid_rate"), rate(r, "success_rate"), who,
                                        accuracy(r), verdict(r, "reid_rate"), verdict(r, "success_rate")]) + " |")
    return "\n".join(lines) + "\n"


def secure_table(secure: pd.DataFrame) -> str:
    """Per N: each family's rates by each attacker."""
    families = list(dict.fromkeys(secure.sort_values("family_rank")["family"]))
    shown = [a for a in ATTACKERS if a in set(secure["attacker"])]
    head = ["N", *(f"{secure.loc[secure['family'] == f, 'family_title'].iloc[0].removeprefix('secure aggregation, ')}: "
                   f"{VERDICT_NAMES[v]}, {ATTACKERS[a]}" for f in families for v in VERDICT_NAMES for a in shown)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sorted(secure["strength"].unique()):
        cells = []
        for f in families:
            rows = secure[(secure["family"] == f) & (secure["strength"] == n)].set_index("attacker")
            cells += [rate(rows.loc[a], v) if a in rows.index else "—" for v in VERDICT_NAMES for a in shown]
        lines.append("| " + " | ".join([f"{int(n)}", *cells]) + " |")
    return "\n".join(lines) + "\n"


def markdown_body(path: Path) -> str:
    """A generated markdown table file without its title line."""
    lines = Path(path).read_text().splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("# ") else lines).strip() + "\n"


def sections(folders: list[Path]) -> dict[str, str]:
    """Every section of the answer, by name (the markers' names)."""
    t = read_tables(folders)
    p = parts(t["defenses"])
    main_folder = Path(folders[0])
    headline = [*claim_bullets(p["main"]), *dpsgd_bullet(p["main"]), *text_bullet(t["text"])]
    out = {"headline": "\n".join(headline) + "\n",
           "claims": markdown_claims(p["main"]),
           "attackers": attackers_table(p["main"])}
    for name, file in (("rounds", "table_rounds.md"), ("dp-bound", "table_dp_bound.md")):
        if (main_folder / file).exists():
            out[name] = markdown_body(main_folder / file)
    if len(p["later"]):
        out["later"] = "\n".join(later_bullets(p["later"])) + "\n"
        out["later-table"] = later_table(p["later"])
    if len(p["secure"]):
        out["secure"] = "\n".join(secure_bullets(p["secure"])) + "\n"
        out["secure-table"] = secure_table(p["secure"])
    return out


def answer_markdown(found: dict[str, str]) -> str:
    """docs/answer.md: every section between its markers."""
    head = ("# The study's answer, generated\n\n"
            "Written by `scripts/answer.py` from the committed tables (dvc.yaml: `answer`); README.md and\n"
            "docs/study.md carry these sections between the same markers. Do not edit by hand.\n")
    return head + "".join(f"\n<!-- answer:{k} -->\n{v}<!-- /answer:{k} -->\n" for k, v in found.items())


def fill(text: str, found: dict[str, str]) -> str:
    """`text` with every marked section replaced by the generated one (KeyError: a marker the
    answer has no section for)."""
    return MARK.sub(lambda m: f"<!-- answer:{m['name']} -->\n{found[m['name']]}<!-- /answer:{m['name']} -->", text)


def unmarked(text: str) -> str:
    """`text` without its marked sections (what a hand may have typed)."""
    return MARK.sub("", text)
