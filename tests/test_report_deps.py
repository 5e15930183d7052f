"""The report stages of dvc.yaml depend on every module of the project their scripts run, so a
change in any of them makes the committed tables stale in `dvc status` (and so in the study
gate), wherever the module lives."""
import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
pytestmark = pytest.mark.fast


def _imported(path: Path) -> set[str]:
    """The gradleak modules (and names that may be modules) one file imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gradleak"):
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("gradleak")}
    return names


def _file_of(module: str) -> Path | None:
    path = SRC.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.exists():
            return candidate
    return None


def project_modules(script: Path) -> set[Path]:
    """Every file of src/ that `script` imports, directly or through others (packages included)."""
    seen, todo = set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imported(path):
            parts = name.split(".")
            todo += [f for i in range(1, len(parts) + 1) if (f := _file_of(".".join(parts[:i]))) and f not in seen]
    return {p for p in seen if p != script}


def _covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@pytest.mark.parametrize("stage", ["collect", "figures", "collect_later", "figures_later",
                                   "collect_secure", "figures_secure", "answer"])
def test_a_report_stage_depends_on_every_module_its_script_runs(stage):
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    scripts = [ROOT / word for word in spec["cmd"].split() if word.startswith("scripts/")]
    modules = set().union(*map(project_modules, scripts))
    assert SRC / "gradleak" / "report" / "claims.py" in modules or "collect" in stage  # the claim rule
    missing = sorted(str(p.relative_to(ROOT)) for p in modules if not _covered(p, spec["deps"]))
    assert missing == [], f"add to {stage}'s deps in dvc.yaml: {missing}"
    assert scripts and all(_covered(script, spec["deps"]) for script in scripts)
