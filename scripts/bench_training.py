"""Per-worker gradients: one vectorized torch.func pass vs a Python loop over workers, and
the loop with contiguous vs channels-last convolution weights (what training uses).

All run in this process on the same model and batch, next to ordinary single-batch
training (the cost floor). Prints milliseconds per step, the loop/vmap ratio (> 1 means
vmap is faster) and the contiguous/channels-last ratio of the loop (> 1 means channels-last
is faster). Last, the pruning defense of one worker's gradient (what every training step
under defense=prune runs per worker): a full sort, as it was, against the selection it uses.
Then Soteria's feature scores of one worker's images (what every training step under
defense=soteria computes per worker): reverse mode (jacrev, any model) against the local
Jacobians of the LeNet's convolution chain, the ratio (> 1 means local is faster) and their
largest relative difference.
Usage: python scripts/bench_training.py [--device cuda] [--threads 1]
"""
import argparse
import copy
import time

import torch

from gradleak.victim.clients import worker_gradients
from gradleak.victim.defenses.prune import prune
from gradleak.victim.defenses.soteria import conv_chain_norms, reverse_mode_norms
from gradleak.victim.models import build_model

CASES = [  # model, channels, image side, global batch
    ("lenet", 1, 28, 64), ("lenet", 1, 28, 256), ("lenet", 3, 32, 128),
    ("resnet20", 3, 32, 64), ("resnet20", 3, 32, 128),
]


def per_step(fn, device, repeats: int) -> float:
    fn()  # warm-up
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - start) / repeats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"device {device}, {args.threads} thread(s), {args.workers} workers")
    for name, channels, side, batch in CASES:
        torch.manual_seed(0)
        model = build_model(name, channels, side, 10).to(device).train()
        images = torch.rand(args.workers, batch // args.workers, channels, side, side, device=device)
        labels = torch.randint(0, 10, (args.workers, batch // args.workers), device=device)

        def single():
            loss = torch.nn.functional.cross_entropy(model(images.flatten(0, 1)), labels.flatten())
            torch.autograd.grad(loss, list(model.parameters()))

        t_vmap = per_step(lambda: worker_gradients(model, images, labels, True), device, args.repeats)
        t_loop = per_step(lambda: worker_gradients(model, images, labels, False), device, args.repeats)
        t_single = per_step(single, device, args.repeats)
        last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        t_last = per_step(lambda: worker_gradients(last, images, labels, False), device, args.repeats)
        print(f"{name:9s} batch {batch:4d}: vmap {1e3 * t_vmap:7.1f} ms  loop {1e3 * t_loop:7.1f} ms  "
              f"single batch {1e3 * t_single:7.1f} ms  loop/vmap {t_loop / t_vmap:.2f}  "
              f"loop channels-last {1e3 * t_last:7.1f} ms  contiguous/channels-last {t_loop / t_last:.2f}")
    torch.manual_seed(0)
    lenet = [p.detach().clone() for p in build_model("lenet", 1, 28, 10).to(device).parameters()]
    t_sort = per_step(lambda: prune_by_sort(lenet, 0.3), device, 100 * args.repeats)
    t_select = per_step(lambda: prune(lenet, ratio=0.3), device, 100 * args.repeats)
    same = all(torch.equal(a, b) for a, b in zip(prune_by_sort(lenet, 0.3), prune(lenet, ratio=0.3)))
    print(f"prune 30% of a LeNet gradient: sort {1e6 * t_sort:7.1f} us  kthvalue {1e6 * t_select:7.1f} us  "
          f"sort/kthvalue {t_sort / t_select:.2f}  same result: {same}")
    for channels, side in [(1, 28), (3, 32)]:
        bench_soteria_scores(channels, side, 64 // args.workers, device, args.repeats)


def bench_soteria_scores(channels: int, side: int, images: int, device, repeats: int):
    torch.manual_seed(0)
    model = build_model("lenet", channels, side, 10).to(device)
    x = torch.rand(images, channels, side, side, device=device)
    with torch.no_grad():
        t_reverse = per_step(lambda: reverse_mode_norms(model, x), device, max(1, repeats // 5))
        t_local = per_step(lambda: conv_chain_norms(model, x), device, repeats)
        (norms, _), (exact, _) = conv_chain_norms(model, x), reverse_mode_norms(model, x)
    worst = float(((norms - exact).abs() / exact.abs()).max())
    print(f"soteria scores, lenet {channels}x{side}x{side}, {images} images: reverse mode {1e3 * t_reverse:7.1f} ms  "
          f"local {1e3 * t_local:7.1f} ms  reverse/local {t_reverse / t_local:.2f}  "
          f"largest relative difference {worst:.1e}")


def prune_by_sort(grads, ratio: float):
    """The baseline: the smallest entries by a stable full sort (the defense's earlier code)."""
    out = []
    for g in grads:
        flat, k = g.reshape(-1), round(ratio * g.numel())
        pruned = flat.clone()
        pruned.scatter_(-1, flat.abs().argsort(stable=True)[:k], 0.0)
        out.append(pruned.reshape(g.shape))
    return out


if __name__ == "__main__":
    main()
