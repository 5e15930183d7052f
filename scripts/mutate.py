"""The study gate measured by mutation (gradleak.gate.mutation): how many small changes to the
code the study runs would the gate (scripts/check_study.py) catch?

    python scripts/mutate.py                 # 40 mutants drawn with seed 0, and the named ones
    python scripts/mutate.py -n 10 --seed 1

Prints one line per mutant, then the caught share and every survivor (docs/benchmarks.md:
the gate measured by mutation).
"""
import argparse
import shutil
import sys
import time

from gradleak.gate import mutation as mu

# Changes the gate once let through (the "One answer" issue): each must be caught.
NAMED = [("jobs/job.py", "cfg.seed + 1)", "cfg.seed + 7)"),  # the distractors of re-identification
         ("intervals.py", "CONFIDENCE = 0.95", "CONFIDENCE = 0.90")]  # every table's intervals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=40, help="mutants drawn at random (default 40)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    committed = mu.committed_records()
    print(f"mutate: coverage of {len(committed)} probes, one context each ...", flush=True)
    lines = mu.probe_lines(sorted(committed))
    pool = mu.candidates(lines)
    mutants = [mu.named(*n) for n in NAMED] + mu.draw(pool, args.n, args.seed)
    print(f"mutate: {len(pool)} mutation points on lines the probes run; checking {len(mutants)} mutants "
          f"({len(NAMED)} named, {len(mutants) - len(NAMED)} drawn with seed {args.seed})", flush=True)
    copy = mu.copy_of_src()
    results = []
    try:
        for i, m in enumerate(mutants, 1):
            probes = sorted(lines.get((m.file, m.line), set()))
            verdict, why = mu.judge(m, probes, copy)
            results.append((m, verdict, why))
            print(f"[{i}/{len(mutants)}] {verdict:8s} {m}  ({why})", flush=True)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    caught = sum(v == "caught" for _, v, _ in results)
    drawn = results[len(NAMED):]
    caught_drawn = sum(v == "caught" for _, v, _ in drawn)
    print(f"\nmutate: caught {caught}/{len(results)}; of the drawn mutants {caught_drawn}/{len(drawn)} "
          f"({100 * caught_drawn / max(1, len(drawn)):.0f}%); {time.perf_counter() - start:.0f} s")
    named_missed = [m for m, v, _ in results[:len(NAMED)] if v != "caught"]
    print("survivors:" if caught < len(results) else "survivors: none")
    for m, v, why in results:
        if v != "caught":
            print(f"  {m}  ({why})")
    return 1 if named_missed else 0


if __name__ == "__main__":
    sys.exit(main())
