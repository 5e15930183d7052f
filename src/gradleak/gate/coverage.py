"""How much of the code the study runs the probes reach (coverage.py), and what they miss.

`python scripts/fingerprint.py --coverage` runs every probe the study needs in this process
under coverage.py and prints the line coverage of engine/, victim/ and jobs/job.py, with the
lines the probes never run; docs/architecture.md says why the study never runs them.
"""
import tempfile
from pathlib import Path

MEASURED = ("engine", "victim", "jobs/job.py")


def report(root: Path, profile: str) -> int:
    import coverage

    src = root / "src" / "gradleak"
    cov = coverage.Coverage(data_file=None, include=[str(src / m) + ("" if m.endswith(".py") else "/*")
                                                     for m in MEASURED])
    cov.start()
    from gradleak.gate.fingerprint import plan
    from gradleak.gate.probes import quiet, run_probe

    names = sorted({n for s in plan(profile).values() for n in s["probes"]})
    for name in names:
        with tempfile.TemporaryDirectory(prefix="gradleak-probe-") as work, quiet():
            run_probe(name, Path(work))
    cov.stop()
    total, missed_lines = 0, 0
    print(f"line coverage of {', '.join(MEASURED)} by the {len(names)} probes the study needs:")
    files = [f for m in MEASURED for f in ([src / m] if m.endswith(".py") else sorted((src / m).rglob("*.py")))]
    for path in map(str, files):
        _, statements, _, missing, _ = cov.analysis2(path)
        total, missed_lines = total + len(statements), missed_lines + len(missing)
        if missing:
            print(f"  {Path(path).relative_to(src)}: {len(statements) - len(missing)}/{len(statements)}, "
                  f"not run: {_ranges(missing)}")
    covered = 100 * (total - missed_lines) / max(total, 1)
    print(f"total: {total - missed_lines}/{total} lines ({covered:.1f}%)")
    return 0


def _ranges(lines: list[int]) -> str:
    """1,2,3,7 -> 1-3, 7"""
    out, start = [], None
    for i, line in enumerate(lines):
        if start is None:
            start = line
        if i + 1 == len(lines) or lines[i + 1] != line + 1:
            out.append(f"{start}" if start == line else f"{start}-{line}")
            start = None
    return ", ".join(out)
