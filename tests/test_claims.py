"""The paper's claims judged by the stated rule (report/claims.py), on constructed tables."""
import math

import pandas as pd
import pytest

from gradleak.report import claims

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("lo,hi,expected", [
    (50.0, 100.0, "leaks"), (49.9, 100.0, "partly"), (0.0, 10.0, "defends"), (0.0, 10.1, "partly"),
    (30.0, 70.0, "partly"),
])
def test_outcome_follows_the_interval_bounds(lo, hi, expected):
    assert claims.outcome(lo, hi) == expected


@pytest.mark.parametrize("outcomes,says,expected", [
    (["leaks", "leaks"], "leaks", "reproduces"), (["defends", "defends"], "leaks", "refuted"),
    (["leaks", "partly"], "leaks", "partly"), (["defends", "leaks"], "defends", "partly"),
    ([], "defends", "not measured"),
])
def test_a_claim_reproduces_only_when_every_setting_agrees(outcomes, says, expected):
    assert claims.claim_verdict(outcomes, says) == expected


def row(family, strength, variance, attacker, reid, success, acc=95.0):
    """A defense-table row; rates in percent with a +-3 interval (clipped to 0..100)."""
    r = {"stage": family.split("-")[0], "setting": f"{family} {strength}", "family": family,
         "family_title": family, "family_rank": 1, "strength": strength, "strength_label": str(strength),
         "strength_rank": 0 if strength is None else (variance if family.startswith("noise") else 1),
         "variance": variance, "attacker": attacker, "test_acc": acc, "n_seeds": 3, "n_targets": 16}
    for rate, v in (("reid_rate", reid), ("success_rate", success)):
        r |= {rate: v, f"{rate}_lo": max(v - 3, 0), f"{rate}_hi": min(v + 3, 100)}
    return r


def test_claims_are_judged_on_the_strongest_row_of_each_setting():
    table = pd.DataFrame([
        row("noise-gaussian", 0.01, 1e-4, "dlg", 95, 0),
        row("noise-gaussian", 0.1, 1e-2 * (1 + 2e-16), "dlg", 2, 0),
        row("noise-gaussian", 0.1, 1e-2 * (1 + 2e-16), "ig", 60, 0),
        {**row("noise-gaussian", 0.1, 1e-2 * (1 + 2e-16), "strongest", 60, 0), "reid_rate_attacker": "ig",
         "success_rate_attacker": "dlg"},
        row("prune", 0.3, math.nan, "dlg", 100, 97),
        row("prune", 0.7, math.nan, "dlg", 1, 0),
    ])
    judged = {c["claim"]: c for c in claims.judge_claims(table)}
    low_noise = judged["Noise of variance 1e-4 (and 1e-3) does not prevent the leak"]
    assert (low_noise["reid_rate"], low_noise["success_rate"]) == ("reproduces", "refuted")
    high_noise = judged["Noise of variance 1e-2 or more defends, at a cost in accuracy"]
    assert list(high_noise["rows"]["attacker"]) == ["strongest"]  # not DLG's 2%: IG re-identifies 60%
    assert (high_noise["reid_rate"], high_noise["success_rate"]) == ("refuted", "reproduces")
    prune = judged["Pruning more than 20% defends, accuracy kept"]
    assert list(prune["rows"]["strength"]) == [0.3, 0.7]
    assert (prune["reid_rate"], prune["success_rate"]) == ("partly", "partly")
    assert judged["Half precision (fp16) fails to protect"]["reid_rate"] == "not measured"
    text = claims.markdown_claims(table)
    assert "60 [57–63] leaks (ig)" in text and "**refuted**" in text
