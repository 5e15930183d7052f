"""Calibrate an attacker's stop rules on its own runs: the same targets attacked with the rules
off and with candidate tolerances, every defense setting of the study, verdicts compared.

    python scripts/calibrate_stops.py --attack ig --data-dir ../shared/data \
        --candidate "stall 1e-2" attack.stop.enabled=true \
        --candidate "stall 1e-3" attack.stop.enabled=true attack.stop.stall_tolerance=1e-3

Each candidate is a name and its overrides; "off" (attack.stop.enabled=false) is always run.
The attacked model is the randomly initialized victim (the defense stages' setting), so
no training runs (train=none). Prints per candidate: targets whose exact-reconstruction or
re-identification verdict differs from "off", and the attack time against "off".
Runs go to results/calibration/<attack>/<candidate>/<stage>/<setting>/.
"""
import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep import multirun  # noqa: E402

from gradleak.jobs.study import load_study, stage_sweeps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFENSE_STAGES = ("undefended", "noise", "prune", "precision", "dpsgd")


def calibration_sweeps(attack: str, seeds: str):
    """(stage/folder, overrides) of every defense setting, attacked by `attack` only, untrained."""
    study = load_study("smoke")
    for stage in DEFENSE_STAGES:
        for sweep in stage_sweeps(study, stage):
            overrides = [o for o in sweep.overrides if not re.match(r"(attack|train|seed)=", o)]
            yield f"{stage}/{sweep.folder}".rstrip("/"), [f"attack={attack}", "train=none", f"seed={seeds}", *overrides]


def verdicts(folder: Path) -> dict:
    """{(job's defense overrides, seed, target): (success, reidentified, wall_s of its job)}."""
    out = {}
    for path in sorted(folder.rglob("metrics.json")):
        metrics = json.loads(path.read_text())
        cfg = metrics["config"]
        setting = json.dumps(metrics["defense"], sort_keys=True)
        for t in metrics["targets"]:
            out[(setting, cfg["seed"], t["target"])] = (bool(t["success"]), t["reidentified"] == 1.0,
                                                        metrics["attack"]["wall_s"], t.get("stop_step", -1))
    return out


def compare(base: dict, other: dict) -> dict:
    keys = sorted(base.keys() & other.keys())
    flips = {"exact": [], "reidentified": []}
    for k in keys:
        for i, verdict in enumerate(flips):
            if base[k][i] != other[k][i]:
                flips[verdict].append((json.loads(k[0]), k[1], k[2], base[k][i], other[k][i]))
    jobs_base = {k[:2]: base[k][2] for k in keys}
    jobs_other = {k[:2]: other[k][2] for k in keys}
    return {"targets": len(keys), "flips": flips,
            "exact": (sum(base[k][0] for k in keys), sum(other[k][0] for k in keys)),
            "reidentified": (sum(base[k][1] for k in keys), sum(other[k][1] for k in keys)),
            "wall_s": (sum(jobs_base.values()), sum(jobs_other.values()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attack", default="ig")
    parser.add_argument("--seeds", default="0", help="comma-separated, as seed=...")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--candidate", nargs="+", action="append", default=[], metavar=("NAME", "OVERRIDE"))
    parser.add_argument("--compare-only", action="store_true", help="read the runs already there")
    args = parser.parse_args()
    out = ROOT / "results" / "calibration" / args.attack
    candidates = {"off": ["attack.stop.enabled=false"], **{c[0]: c[1:] for c in args.candidate}}
    if not args.compare_only:
        for name, overrides in candidates.items():
            for where, sweep in calibration_sweeps(args.attack, args.seeds):
                folder = out / name.replace(" ", "_") / where
                if not any(folder.rglob("metrics.json")):
                    multirun([*sweep, *overrides], args.data_dir, folder)
    base = verdicts(out / "off")
    for name in list(candidates)[1:]:
        result = compare(base, verdicts(out / name.replace(" ", "_")))
        (b_exact, c_exact), (b_reid, c_reid) = result["exact"], result["reidentified"]
        b_wall, c_wall = result["wall_s"]
        print(f"{name}: {result['targets']} targets; exact {b_exact} -> {c_exact} "
              f"({len(result['flips']['exact'])} flipped); re-identified {b_reid} -> {c_reid} "
              f"({len(result['flips']['reidentified'])} flipped); attack time {b_wall:.0f} -> {c_wall:.0f} s "
              f"(x{b_wall / max(c_wall, 1e-9):.2f})")
        for verdict, flips in result["flips"].items():
            per_setting = {}
            for defense, _, _, was, _ in flips:
                name = " ".join(dict.fromkeys([defense["family_title"], defense["strength_label"]]))
                per_setting.setdefault(name, [0, 0])[int(was)] += 1
            for name, (gained, lost) in per_setting.items():
                print(f"  {verdict}: {name}: {lost} lost, {gained} gained")
    return 0


if __name__ == "__main__":
    sys.exit(main())
