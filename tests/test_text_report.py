"""The text study's report: text jobs collected apart, the table, claims and gallery."""
import pytest

from gradleak.job_record import JobRecord
from gradleak.report.collect import collect
from gradleak.report.text import gallery_markdown, text_table, write_text
from gradleak.victim.defenses import setting_of

TRUTH = "but who can withhold himself from speaking ?"


def text_job(job_dir, seed: int, defense: dict, attacker: str, exact: list[bool]) -> None:
    """A text job's metrics.json: sentence t is recovered exactly or with its first word wrong."""
    targets = []
    for t, ok in enumerate(exact):
        wrong = [] if ok else [0]
        recovered = TRUTH if ok else "who " + TRUTH.split(" ", 1)[1]
        targets.append({"target": t, "index": [10 * seed + t], "truth": TRUTH, "recovered": recovered,
                        "length": 8, "token_acc": 1.0 if ok else 7 / 8, "success": ok,
                        "continuous_token_acc": 0.25, "rouge1_f": 1.0, "rouge2_f": 1.0 if ok else 0.8,
                        "rougeL_f": 1.0 if ok else 0.9, "reid_rank": 1, "reidentified": 1.0, "distractors": 999,
                        "loss": 1.0, "discrete_match": 0.0, "candidates": 8, "evals": 100, "wrong": wrong})
    knobs = {k: v for k, v in defense.items() if k != "name"}
    overrides = ["task=text", f"defense={defense['name']}", *(f"{k}={v}" for k, v in knobs.items()),
                 f"seed={seed}"] + (["attack.adaptive=true"] if attacker.endswith("adaptive") else [])
    record = JobRecord(overrides=overrides,
                       config={"task": "text", "seed": seed, "defense.name": defense["name"],
                               "attack.name": "text", "dataset.name": "bible", "model.name": "textlm"},
                       attacker=attacker, defense=setting_of(defense), mlflow={}, device="cpu",
                       attack={"wall_s": 1.0}, targets=targets, curve={}, snapshots={}, grid="recovered.md")
    job_dir.mkdir(parents=True)
    record.write(job_dir / "metrics.json")


@pytest.fixture
def text_results(tmp_path):
    root = tmp_path / "sweeps"
    prune = {"name": "prune", "ratio": 0.5}
    for seed in (0, 1):
        text_job(root / "text" / "undefended" / f"{seed}", seed, {"name": "none"}, "text", [True] * 4)
        text_job(root / "text" / "prune" / f"a{seed}", seed, prune, "text", [seed == 0, False, False, False])
        text_job(root / "text" / "prune" / f"b{seed}", seed, prune, "text adaptive", [True, True, True, False])
    return root


@pytest.mark.fast
def test_text_jobs_are_collected_apart_from_the_image_tables(text_results, tmp_path):
    tables = collect(text_results, tmp_path)
    assert tables["summary"].empty and tables["targets"].empty
    text = tables["text"]
    assert len(text) == 6 * 4 and set(text["stage"]) == {"text"}
    assert sorted(text["attacker"].unique()) == ["text", "text adaptive"]


@pytest.mark.fast
def test_the_text_table_pools_seeds_and_takes_each_verdict_from_the_best_attacker(text_results, tmp_path):
    table = text_table(collect(text_results, tmp_path)["text"])
    undefended = table[table["family"] == "none"]
    assert len(undefended) == 1 and undefended.iloc[0]["success_rate"] == 100 and undefended.iloc[0]["n"] == 8
    prune = table[table["family"] == "prune"].set_index("attacker")
    assert prune.loc["text", "success"] == 1 and prune.loc["text adaptive", "success"] == 6
    assert prune.loc["text", "success_rate_lo"] == pytest.approx(2.24, abs=0.01)  # Wilson 1/8
    assert prune.loc["strongest", "success"] == 6 and prune.loc["strongest", "success_rate_attacker"] == "text adaptive"
    assert prune.loc["text", "token_acc"] == pytest.approx(100 * (1 + 7 * 7 / 8) / 8)


@pytest.mark.fast
def test_text_claims_and_gallery(text_results, tmp_path):
    text = collect(text_results, tmp_path)["text"]
    out = tmp_path / "figures"
    out.mkdir()
    names = {p.name for p in write_text(text, out)}
    assert names == {"table_text.md", "table_text.csv", "text_gallery.md", "table_text_claims.md",
                     "fig_text_leakage.png"}
    claims = (out / "table_text_claims.md").read_text()
    # pruning 50%: the adaptive attacker re-identifies 8/8 -> "leaks", the paper says "defends"
    row = next(line for line in claims.splitlines() if line.startswith("| Pruning more than 20%"))
    assert "**refuted**" in row
    gallery = gallery_markdown(text, text_table(text))
    assert f"**true**: {TRUTH}" in gallery and "~~who~~" not in gallery  # seed 0's best recovery is exact
