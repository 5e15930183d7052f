"""Where our default attack's time goes: its objective calls by how many problems each
evaluates (the batched engine pays per call as well as per problem).

Runs conf/attack/dlg.yaml, with any `key=value` overrides of it, on the first `--targets`
test images of the dataset (undefended, the same LeNet and targets as scripts/bench.py's
time-to-verdict part) and prints the verdicts (exact, with their 95% Wilson interval, and
the median PSNR), why the problems stopped, the steps, calls, evaluations, the objective's
share of the time and, per call size, the calls and their time.

    python scripts/profile_calls.py --data-dir ../shared/data
    python scripts/profile_calls.py --data-dir ../shared/data stop.restart_delay=0
    python scripts/profile_calls.py --dataset npz --path ../shared/data/subsets/cifar100_test_first20.npz \
        --targets 20 --threads 1 stop.converged_loss=3e-8
"""
import argparse
import collections
import os
import statistics
import time

import torch
from bench import default_attack_config, load_images

from gradleak.engine.attack import Attack
from gradleak.intervals import wilson
from gradleak.victim.models import LeNet

SIZES = (1, 8, 32, 64, 192, 1024, 10**9)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", type=int, default=64)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=os.environ.get("GRADLEAK_DATA_DIR", "data"))
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--path", default=None,
                   help="the image set of --dataset npz or imagefolder (all of it is the test split)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("overrides", nargs="*", help="conf/attack/dlg.yaml keys, e.g. stop.converged_loss=3e-8 restarts=2")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images, labels, test = load_images(args, args.targets)
    model = LeNet(test.shape[0], test.shape[1], test.num_classes).eval()
    cfg = default_attack_config(args.overrides)
    attack = Attack(cfg, model, images, labels, lambda g, **_: g, args.seed, torch.device("cpu"))
    calls, objective = [], attack.optimizer.f

    def timed(x, rows):
        start = time.perf_counter()
        out = objective(x, rows)
        calls.append((len(rows), time.perf_counter() - start))
        return out

    attack.optimizer.f = timed
    start, steps = time.perf_counter(), 0
    while steps < attack.loop_steps and attack.optimizer.state.running.any():
        attack.advance()
        steps += 1
    total = time.perf_counter() - start
    in_objective = sum(t for _, t in calls)
    results = attack.results()
    exact = sum(t["success"] for t in results)
    low, high = wilson(exact, len(results))
    reasons = attack.stop_reasons()
    print(f"attack: {' '.join(args.overrides) or 'conf/attack/dlg.yaml'}")
    psnr = statistics.median(t["psnr"] for t in results)
    print(f"targets: {len(results)} x {cfg.restarts} restarts, exact (MSE < {cfg.success_mse:g}) {exact}/{len(results)}"
          f" (95% Wilson {100 * low:.0f}-{100 * high:.0f}%), median PSNR {psnr:.1f} dB")
    print("problems stopped by: " + ", ".join(f"{r} {n}" for r, n in collections.Counter(reasons).most_common()))
    print(f"steps: {steps}  calls: {len(calls)}  evals: {sum(n for n, _ in calls)}")
    print(f"seconds: {total:.1f} (objective {in_objective:.1f}, the rest {total - in_objective:.1f})")
    by_size = collections.defaultdict(lambda: [0, 0.0])
    for n, t in calls:
        bucket = next(s for s in SIZES if n <= s)
        by_size[bucket][0] += 1
        by_size[bucket][1] += t
    low = 1
    for bucket in sorted(by_size):
        count, seconds = by_size[bucket]
        print(f"calls of {low}-{bucket} problems: {count}, {seconds:.1f} s ({1000 * seconds / count:.1f} ms per call)")
        low = bucket + 1


if __name__ == "__main__":
    main()
