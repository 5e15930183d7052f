"""How much of the code the study runs the probes reach (coverage.py), and what they miss.

`python scripts/fingerprint.py --coverage` runs every probe in this process under coverage.py
and prints the line coverage of engine/, victim/ and jobs/job.py: first by the probes of the
study's stages, then with the library probes (code no stage runs) added, and the lines
neither reaches; docs/architecture.md says why the study never runs them.
"""
import tempfile
from pathlib import Path

MEASURED = ("engine", "victim", "jobs/job.py")


def report(root: Path, profile: str) -> int:
    import coverage

    src = root / "src" / "gradleak"
    files = [str(f) for m in MEASURED for f in ([src / m] if m.endswith(".py") else sorted((src / m).rglob("*.py")))]
    cov = coverage.Coverage(data_file=None, include=files)
    cov.start()  # before the measured modules are imported: their definitions count as run
    from gradleak.gate.fingerprint import plan
    from gradleak.gate.probes import LIBRARY, quiet, run_probe

    cov.stop()

    study = sorted({n for s in plan(profile).values() for n in s["probes"]})
    for names, what in ((study, f"the {len(study)} probes of the study's stages"),
                        (sorted(LIBRARY), f"those and the {len(LIBRARY)} library probes")):
        cov.start()
        for name in names:
            with tempfile.TemporaryDirectory(prefix="gradleak-probe-") as work, quiet():
                run_probe(name, Path(work))
        cov.stop()
        missing = {path: cov.analysis2(path)[3] for path in files}
        total = sum(len(cov.analysis2(path)[1]) for path in files)
        missed = sum(map(len, missing.values()))
        print(f"line coverage of {', '.join(MEASURED)} by {what}: {total - missed}/{total} "
              f"({100 * (total - missed) / total:.1f}%)")
    print("not run by any probe:")
    for path, lines in missing.items():
        if lines:
            print(f"  {Path(path).relative_to(src)}: {_ranges(lines)}")
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
