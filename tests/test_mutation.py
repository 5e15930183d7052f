"""The gate's mutation run (gradleak.gate.mutation): which changes it makes, on which lines,
and how a mutant is judged (the probes that run its line, or dvc.lock's hash of its file)."""
import ast

import pytest

from gradleak.gate import mutation as mu

pytestmark = pytest.mark.fast


def test_each_operator_and_constant_is_swapped_once():
    tree = ast.parse("def f(a, b):\n    return a < b and a + 2 * b == 0.5 and True\n")
    points = mu.mutation_points(tree)
    changes = []
    for index in range(len(points)):
        fresh = ast.parse("def f(a, b):\n    return a < b and a + 2 * b == 0.5 and True\n")
        node, how = mu.mutation_points(fresh)[index]
        changes.append(mu._mutate(node, how))
    assert sorted(changes) == sorted(["< -> <=", "+ -> -", "* -> /", "== -> !=", "2 -> 3", "0.5 -> 1.0",
                                      "True -> False"])


def test_a_named_mutant_is_a_text_edit_on_its_line():
    m = mu.named("jobs/job.py", "cfg.seed + 1)", "cfg.seed + 7)")
    source = (mu.SRC / "jobs/job.py").read_text()
    assert source.splitlines()[m.line - 1].count("cfg.seed + 1)") == 1
    assert mu.mutated_source(m) == source.replace("cfg.seed + 1)", "cfg.seed + 7)")
    with pytest.raises(AssertionError, match="not once"):
        mu.named("jobs/job.py", "no such text", "x")


def test_only_lines_a_probe_runs_give_mutants():
    lines = {("engine/reidentification.py", 36): {"verdicts"}}  # the ranking's comparison
    pool = mu.candidates(lines)
    assert pool and {(m.file, m.line) for m in pool} == {("engine/reidentification.py", 36)}
    assert "< -> <=" in {m.what for m in pool}
    for m in pool:  # each mutant compiles and changes the file
        assert mu.mutated_source(m) != ast.unparse(ast.parse((mu.SRC / m.file).read_text())) + "\n"
        compile(mu.mutated_source(m), m.file, "exec")


def test_lines_run_at_import_are_not_function_lines():
    inside = mu.function_lines(mu.SRC / "intervals.py")
    source = (mu.SRC / "intervals.py").read_text().splitlines()
    assert source.index("CONFIDENCE = 0.95") + 1 not in inside
    assert any("binomtest" in source[i - 1] for i in inside)


def test_a_mutant_in_a_file_the_report_stages_hash_is_caught_by_dvc_lock(tmp_path):
    assert {"intervals.py", "report/claims.py", "job_record.py"} <= mu.lock_dependencies()
    verdict, why = mu.judge(mu.named("intervals.py", "CONFIDENCE = 0.95", "CONFIDENCE = 0.90"), [], tmp_path)
    assert (verdict, why) == ("caught", "dvc.lock: a report stage depends on the file")
    assert mu.judge(mu.Mutant("engine/labels.py", 1, "x", 0), [], tmp_path) == ("survived", "no probe runs the line")
