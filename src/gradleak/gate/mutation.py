"""The gate measured by what it catches, not by what it runs: mutants of the code the study's
probes run, and whether the study gate (scripts/check_study.py) notices each.

A mutant changes one operator or constant on a line some probe runs (coverage.py, one context
per probe): `<` and `<=`, `>` and `>=`, `==` and `!=`, `+` and `-`, `*` and `/`, a number (an
int plus one, a float doubled), True and False. It is caught when
- a probe that runs its line records another number than docs/fingerprint (beyond the gate's
  tolerance), raises, or runs past the time limit: only those probes are rerun, as a probe that
  does not run the line cannot record another number; lines run while a module is imported
  (its constants) count as run by every probe that runs the module;
- or its file is a dependency of a stage of dvc.yaml (the report code, by its hash in dvc.lock).
`scripts/mutate.py` draws the mutants (seeded), runs them in a copy of src/ and prints the
caught share and every survivor.
"""
import ast
import json
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from gradleak import project_root

ROOT = project_root()
SRC = ROOT / "src" / "gradleak"
# The code the study's jobs run, where the fingerprint is the gate (the report is dvc.lock's).
MEASURED = ("engine", "victim", "text", "jobs/job.py", "jobs/text_job.py", "intervals.py")
SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
         ast.NotEq: ast.Eq, ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}
PROBE_TIMEOUT_S = 600


@dataclass(frozen=True)
class Mutant:
    file: str      # relative to src/gradleak
    line: int
    what: str      # "< -> <=", "0.95 -> 1.9"
    index: int     # which mutation point of the file (ast.walk order); -1: a text edit, `what`
    old: str = ""  # a text edit's old and new text (the named mutants)
    new: str = ""

    def __str__(self) -> str:
        return f"{self.file}:{self.line} {self.what}"


def measured_files() -> list[Path]:
    return [f for m in MEASURED for f in ([SRC / m] if m.endswith(".py") else sorted((SRC / m).rglob("*.py")))]


# --- where the probes run ------------------------------------------------------------------------

def probe_lines(names: list[str]) -> dict[tuple[str, int], set[str]]:
    """(file, line) -> the probes that run it, each probe in its own coverage context."""
    import coverage

    files = [str(f) for f in measured_files()]
    cov = coverage.Coverage(data_file=None, include=files)
    cov.start()  # before the measured modules are imported
    from gradleak.gate.probes import quiet, run_probe

    for name in names:
        cov.switch_context(name)
        with tempfile.TemporaryDirectory(prefix="gradleak-probe-") as work, quiet():
            run_probe(name, Path(work))
    cov.stop()
    data, lines = cov.get_data(), {}
    for path in files:
        rel = str(Path(path).relative_to(SRC))
        by_line = data.contexts_by_lineno(path)
        in_file = set().union(*(set(c) for c in by_line.values())) - {""} if by_line else set()
        in_functions = function_lines(Path(path))
        for line, contexts in by_line.items():
            # a line run at import (a constant, a default) is credited to whichever probe imported
            # the module first: every probe that runs the module may read it
            lines[(rel, line)] = set(contexts) - {""} if line in in_functions else in_file
    return lines


def function_lines(path: Path) -> set[int]:
    """The lines of a file's function bodies (run when called; the rest runs at import)."""
    lines = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            body = node.body if isinstance(node.body, list) else [node.body]
            for stmt in body:
                lines |= set(range(stmt.lineno, stmt.end_lineno + 1))
    return lines


# --- the mutants ---------------------------------------------------------------------------------

def mutation_points(tree: ast.AST) -> list[tuple[ast.AST, str]]:
    """Every node a mutation can change, with what it becomes (ast.walk order)."""
    points = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            points += [(node, f"{i}") for i, op in enumerate(node.ops) if type(op) in SWAPS]
        elif isinstance(node, ast.BinOp | ast.AugAssign) and type(node.op) in SWAPS:
            points.append((node, "op"))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float, bool):
            points.append((node, "value"))
    return points


def _mutate(node: ast.AST, how: str) -> str:
    """Change `node` in place; returns what changed."""
    if isinstance(node, ast.Compare):
        i = int(how)
        old = node.ops[i]
        node.ops[i] = SWAPS[type(old)]()
        return f"{_op(old)} -> {_op(node.ops[i])}"
    if how == "op":
        old = node.op
        node.op = SWAPS[type(old)]()
        return f"{_op(old)} -> {_op(node.op)}"
    old = node.value
    node.value = (not old) if isinstance(old, bool) else (old + 1 if isinstance(old, int) else (old * 2 or 1.0))
    return f"{old!r} -> {node.value!r}"


def _op(op) -> str:
    return {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
            ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}[type(op)]


def named(file: str, old: str, new: str) -> Mutant:
    """A mutant by a text edit (a change the operators above do not make)."""
    source = (SRC / file).read_text()
    assert source.count(old) == 1, f"{old!r} is not once in {file}"
    return Mutant(file, source[:source.index(old)].count("\n") + 1, f"{old} -> {new}", -1, old, new)


def mutated_source(mutant: Mutant) -> str:
    """The mutant's file as the mutant has it."""
    source = (SRC / mutant.file).read_text()
    if mutant.index < 0:
        return source.replace(mutant.old, mutant.new)
    tree = ast.parse(source)
    _mutate(*mutation_points(tree)[mutant.index])
    return ast.unparse(tree) + "\n"


def candidates(lines: dict[tuple[str, int], set[str]]) -> list[Mutant]:
    """Every mutation on a line some probe runs (docstrings and annotations have none)."""
    out = []
    for path in measured_files():
        rel = str(path.relative_to(SRC))
        for index, (node, how) in enumerate(mutation_points(ast.parse(path.read_text()))):
            if lines.get((rel, node.lineno)):
                out.append(Mutant(rel, node.lineno, _mutate(node, how), index))  # this parse is not reused
    return out


def draw(pool: list[Mutant], n: int, seed: int) -> list[Mutant]:
    return sorted(random.Random(seed).sample(pool, min(n, len(pool))), key=lambda m: (m.file, m.line, m.index))


# --- judging a mutant ----------------------------------------------------------------------------

def lock_dependencies() -> set[str]:
    """The files under src/gradleak that a stage of dvc.yaml depends on by hash."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
    deps = {d for s in stages for d in s.get("deps", []) if isinstance(d, str)}
    return {str(Path(d).relative_to("src/gradleak")) for d in deps if d.startswith("src/gradleak/")}


def committed_records() -> dict[str, dict]:
    records = {}
    for path in sorted((ROOT / "docs" / "fingerprint").glob("*.json")):
        records.update(json.loads(path.read_text())["probes"])
    return records


def judge(mutant: Mutant, probes: list[str], copy: Path) -> tuple[str, str]:
    """(verdict, why): caught by a probe or by dvc.lock, or survived. `copy` is a copy of src/;
    the probes run in one process on the mutated copy, which stops at the first that moves."""
    if mutant.file in lock_dependencies():
        return "caught", "dvc.lock: a report stage depends on the file"
    if not probes:
        return "survived", "no probe runs the line"
    target = copy / "gradleak" / mutant.file
    original = target.read_text()
    target.write_text(mutated_source(mutant))
    try:
        cmd = [sys.executable, "-m", "gradleak.gate.mutation", *probes]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, cwd=ROOT,
                              env={**_env(), "PYTHONPATH": str(copy)})
    except subprocess.TimeoutExpired:
        return "caught", f"the probes ran past {PROBE_TIMEOUT_S} s"
    finally:
        target.write_text(original)
    if done.returncode:
        return "caught", f"a probe failed: {(done.stderr.strip().splitlines() or ['?'])[-1][:100]}"
    moved = done.stdout.strip()
    if moved:
        return "caught", moved[:140]
    return "survived", f"{len(probes)} probe(s) run it and agree: {', '.join(probes[:4])}" + (
        ", ..." if len(probes) > 4 else "")


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def copy_of_src() -> Path:
    where = Path(tempfile.mkdtemp(prefix="gradleak-mutants-"))
    shutil.copytree(SRC, where / "gradleak", ignore=shutil.ignore_patterns("__pycache__"))
    return where


def _probes_main(names: list[str]) -> None:
    """Run the probes on this process's code (the mutant's); print the first that moves from
    docs/fingerprint, if any (the mutant's subprocess)."""
    import torch

    from gradleak.gate.fingerprint import _compare
    from gradleak.gate.probes import quiet, run_probe

    torch.set_num_threads(1)
    committed = committed_records()
    for name in names:
        with tempfile.TemporaryDirectory(prefix="gradleak-probe-") as work, quiet():
            record = json.loads(json.dumps(run_probe(name, Path(work))))  # as the fingerprint stores it
        moved = _compare(committed[name], record, "")
        if moved:
            print(f"probe {name}: {moved[0]}")
            return


if __name__ == "__main__":
    _probes_main(sys.argv[1:])
