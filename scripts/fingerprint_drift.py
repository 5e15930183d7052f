"""How far the probes drift when only the floating-point arithmetic changes: every probe the
study needs rerun with other torch threads and convolution kernels (oneDNN off), compared
with the committed docs/fingerprint. It sizes the gate's tolerance (docs/benchmarks.md).

    python scripts/fingerprint_drift.py --threads 2 --no-mkldnn
"""
import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # noqa: E402 - probe this checkout


def numbers(a, b, where=""):
    """(where, committed, fresh) for every float of two records of the same shape."""
    if isinstance(a, dict):
        for k in a:
            yield from numbers(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from numbers(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and not math.isnan(a):
        yield where, a, float(b)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-mkldnn", action="store_true", help="torch.backends.mkldnn.enabled = False")
    args = parser.parse_args()
    import torch

    from gradleak.gate import fingerprint as fp
    from gradleak.gate.probes import quiet, run_probe

    torch.backends.mkldnn.enabled = not args.no_mkldnn
    committed = {}
    for stage in (*fp.STAGES, fp.OUTSIDE_STUDY):
        committed.update(fp.read(ROOT, stage)["probes"])
    worst = []
    for name in sorted(committed):
        torch.set_num_threads(args.threads)
        with tempfile.TemporaryDirectory() as work, quiet():
            torch.set_num_threads(args.threads)
            fresh = json.loads(json.dumps(run_probe(name, Path(work))))
        rel = [(abs(f - c) / max(abs(c), abs(f), 1e-300), w, c, f) for w, c, f in numbers(committed[name], fresh)
               if f != c]
        outside = fp.differences({"jobs": {}, "probes": {name: committed[name]}},
                                 {"profile": None, "jobs": {}, "probes": {name: fresh}})
        top = max(rel, default=(0.0, "", 0, 0))
        worst.append(top[0])
        print(f"{name:40s} numbers that moved {len(rel):4d}  largest relative {top[0]:.1e} {top[1]}"
              f"{'  OUTSIDE TOLERANCE' if outside else ''}", flush=True)
    print(f"threads={args.threads} mkldnn={not args.no_mkldnn}: largest relative drift {max(worst):.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
