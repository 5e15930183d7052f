"""The answer is generated, never typed (gradleak.report.answer): README.md and docs/study.md
carry the sections the committed tables give, and no rate or accuracy outside them."""
import re
from pathlib import Path

import pandas as pd
import pytest

from gradleak.report import answer

ROOT = Path(__file__).resolve().parents[1]
TABLES = [ROOT / "docs" / f for f in ("figures", "figures-later", "figures-secure")]  # scripts/answer.py's
CARRIERS = [ROOT / "README.md", ROOT / "docs" / "study.md"]
# What a hand-typed result looks like: a rate with its interval, an interval, a mean ± half-width.
TYPED = re.compile(r"\d+(?:\.\d+)?% \[|\[\d+(?:\.\d+)?%?(?:[–-]|, )\d+(?:\.\d+)?%?\]|\d ± \d")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)  # commands and example output, not results
pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def sections():
    return answer.sections(TABLES)


def typed_results(text: str) -> list[str]:
    """The lines of `text` outside marked sections and code that state a rate or accuracy."""
    return [line for line in CODE.sub("", answer.unmarked(text)).splitlines() if TYPED.search(line)]


@pytest.mark.parametrize("path", CARRIERS, ids=lambda p: p.name)
def test_every_marked_section_is_what_the_tables_give(path, sections):
    text = path.read_text()
    marked = {m["name"]: m["body"] for m in answer.MARK.finditer(text)}
    assert marked, f"{path.name} carries no section of the answer"
    for name, body in marked.items():
        assert body == sections[name], f"{path.name}: section {name} is stale; run python scripts/answer.py"


@pytest.mark.parametrize("path", CARRIERS, ids=lambda p: p.name)
def test_no_rate_or_accuracy_is_typed_outside_a_marked_section(path):
    assert typed_results(path.read_text()) == []


def test_docs_answer_is_the_tables_answer(sections):
    assert (ROOT / "docs" / "answer.md").read_text() == answer.answer_markdown(sections)


def test_an_edited_number_is_caught_inside_and_outside_a_section(sections):
    readme = (ROOT / "README.md").read_text()
    body = sections["headline"]
    first = re.search(r"\d+% \[", body).group()
    edited = readme.replace(body, body.replace(first, f"{int(first[:-3]) + 1}% [", 1))
    assert answer.fill(edited, sections) == readme  # the section is put back as the tables say
    moved = answer.unmarked(edited) + "\nIG re-identifies 73% [59–83] at variance 1e-1.\n"
    assert typed_results(moved) == ["IG re-identifies 73% [59–83] at variance 1e-1."]


def test_the_claim_rule_names_the_verdicts():
    row = pd.Series({"attacker": "ig", "reid_rate": 8.3, "reid_rate_lo": 3.3, "reid_rate_hi": 19.6,
                     "success_rate": 0.0, "success_rate_lo": 0.0, "success_rate_hi": 7.4})
    assert (answer.rate(row, "reid_rate"), answer.verdict(row, "reid_rate")) == ("8% [3–20]", "partly")
    assert answer.verdict(row, "success_rate") == "defends"
    assert answer.attacker(row, "reid_rate") == "IG"


def test_the_oracle_decodes_are_said_wherever_their_rates_are(sections):
    for family in answer.ORACLE:
        line = next(ln for ln in sections["later"].splitlines() if family.lower() in ln.lower().replace("-", ""))
        assert answer.ORACLE[family] in line
    assert "(given the mixing)" in sections["later-table"]


def test_a_marker_with_no_section_is_refused(sections):
    with pytest.raises(KeyError, match="nothing-here"):
        answer.fill("<!-- answer:nothing-here -->\nold\n<!-- /answer:nothing-here -->\n", sections)
