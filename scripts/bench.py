"""Attack speed: the original one-image-at-a-time loops vs our batched engine, twice.

1. Throughput. `--attack dlg` (default): the DLG loop (torch.optim.LBFGS, lr 1, history
   100, max_iter 20, no line search) vs our batched L-BFGS. `--attack ig`: the Inverting
   Gradients loop (torch.optim.Adam on sign(gradient), lr 0.1, MultiStepLR, images clamped
   to [0, 1], cosine match + TV 1e-4, iDLG's label) vs our batched signed Adam, the same
   number of updates. Both run in this process, alternating step by step, on the same real
   images, victim weights, dummy initialization and step budget, with the same torch
   thread count (default: every core). Ours compiles its objective first
   (`attack.compile=true`); that one-time cost is printed on its own line, outside the
   ratio. `speedup: <ours / reference evals per s>`.
2. Time to verdict (DLG): the reference loop with its fixed 300 steps on the first
   `--verdict-images` test images, against our default attack (conf/attack/dlg.yaml: line
   search, restarts, stop rules) on `--verdict-targets` test images in one batch, the
   reference's images first; the two alternate step by step while both run. Wall seconds
   per target for each, success rates (MSE < 1e-3) on the reference's images for both and
   on all of ours, and `time_per_target_speedup: <reference s per target / ours>`.
3. `--attack text`: DLG on text (task=text's victim, its bag-of-words candidates, the
   continuous phase): a one-sentence reference loop per sentence (torch.optim.LBFGS on the
   dummy embeddings and soft labels, autograd with create_graph, lr 1, history 100,
   max_iter 20) vs our batched L-BFGS on all `-k` sentences (conf/attack/text.yaml's
   objective, stop rules off), the same steps, alternating step by step. Evaluations per
   second for each and `speedup`.
Prints one `name: value` line per figure.

    python scripts/bench.py --quick                 # 2 CPU cores, under 5 minutes
    python scripts/bench.py --quick --attack ig     # the same for Inverting Gradients
    python scripts/bench.py --device cuda -k 4096   # a GPU
    python scripts/bench.py --attack text --quick   # DLG on text
"""
import argparse
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

from gradleak.engine.attack import Attack
from gradleak.engine.labels import idlg_labels
from gradleak.engine.optimizers import BatchedLBFGS, BatchedSignedAdam
from gradleak.engine.problems import DummyLayout, ProblemObjective
from gradleak.engine.published import ReferenceDLG, ReferenceIG
from gradleak.victim.data import DatasetError, load_split
from gradleak.victim.gradients import shared_gradients
from gradleak.victim.models import LeNet

SUCCESS_MSE = 1e-3
REFERENCE_STEPS = 300
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IG_LR, IG_TV, IG_UPDATES_PER_STEP = 0.1, 1e-4, 20  # conf/attack/ig.yaml


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small step budget (2 CPU cores, < 5 min)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("-k", "--problems", type=int, default=None, help="our batch of attacks (default 64 cpu, 4096 cuda)")
    p.add_argument("--reference-images", type=int, default=8, help="images the reference loop attacks")
    p.add_argument("--attack", default="dlg", choices=["dlg", "ig", "text"])
    p.add_argument("--steps", type=int, default=None,
                   help="L-BFGS steps (default 300, --quick 40); ig: Adam updates (default 4800, --quick 400)")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=os.environ.get("GRADLEAK_DATA_DIR", "data"))
    p.add_argument("--threads", type=int, default=int(os.environ.get("GRADLEAK_THREADS", len(os.sched_getaffinity(0)))),
                   help="torch threads for both (default: every core this process may use)")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="our objective without torch.compile (no one-time cost)")
    p.add_argument("--verdict-images", type=int, default=None,
                   help="images the reference attacks for the time to verdict (default 8, --quick 4)")
    p.add_argument("--verdict-targets", type=int, default=64, help="targets of our default attack")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("ours", nargs="*", metavar="key=value",
                   help="overrides of conf/attack/dlg.yaml for our attack in the time to verdict, e.g. restarts=1"
                        " (what a weaker or stronger default would cost; the throughput part is unchanged)")
    return p.parse_args()


def load_images(args, n: int):
    try:
        dataset = {"name": args.dataset, "data_dir": args.data_dir}
        if getattr(args, "path", None):  # an image set of one's own: all of it is the test split
            dataset.update(path=args.path, test_fraction=1.0)
        test = load_split(OmegaConf.create(dataset), "test")
    except DatasetError as exc:
        sys.exit(f"error: {exc}")
    reps = -(-n // len(test))  # K may exceed the test split: reuse images, new inits
    images = test.images.repeat(reps, 1, 1, 1)[:n]
    labels = test.labels.repeat(reps)[:n]
    return images[:, None], labels[:, None], test


def setup(args, k: int, device, with_labels: bool = True):
    torch.manual_seed(args.seed)
    images, labels, test = load_images(args, k)
    c, s = test.shape[0], test.shape[1]
    model = LeNet(c, s, test.num_classes).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    images, labels = images.to(device), labels.to(device)
    targets = shared_gradients(model, images, labels)
    layout = DummyLayout(1, test.shape, test.num_classes, with_labels=with_labels)
    gen = torch.Generator().manual_seed(args.seed + 1)
    # one draw, row by row: problem i starts from the same point whatever K is
    x0 = torch.randn(k, layout.image_numel + test.num_classes, generator=gen).to(device)
    return model, images, targets, layout, x0 if with_labels else x0[:, :layout.image_numel]


def success(recon, truth) -> torch.Tensor:
    return ((recon.clamp(0, 1) - truth) ** 2).flatten(1).mean(1) < SUCCESS_MSE


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def compile_objective(objective, x0, device) -> float:
    """Compile (once, for the chunk's shape); returns the seconds it took."""
    start = time.perf_counter()
    objective(x0, torch.arange(len(x0), device=device))
    sync(device)
    return time.perf_counter() - start


def alternate(refs, ours, steps: int, device) -> tuple[float, float]:
    """`steps` steps of every reference loop and of our batched optimizer, alternating, each
    timed on its own; returns (reference seconds, our seconds)."""
    ref_s = our_s = 0.0
    for _ in range(steps):
        start = time.perf_counter()
        for ref in refs:
            ref.step()
        sync(device)
        ref_s += time.perf_counter() - start
        start = time.perf_counter()
        if ours.state.running.any():
            ours.step()
        sync(device)
        our_s += time.perf_counter() - start
    return ref_s, our_s


def run_interleaved(model, images, targets, layout, x0, n_ref, steps, device, compile):
    """Both attacks step by step, alternating, each timed on its own: on a shared, noisy
    machine the load then falls on both alike and the ratio stays fair."""
    refs = [ReferenceDLG(model, [t[k] for t in targets], layout.images(x0[k:k + 1])[0],
                         layout.labels(x0[k:k + 1])[0]) for k in range(n_ref)]
    objective = ProblemObjective(model, layout, targets, None, compile=compile)
    one_time_s = compile_objective(objective, x0, device) if compile else 0.0
    ours = BatchedLBFGS(objective, x0)
    ref_s, our_s = alternate(refs, ours, steps, device)
    ref_ok = torch.stack([success(r.images.detach(), images[k])[0] for k, r in enumerate(refs)])
    our_ok = success(layout.images(ours.state.x).flatten(0, 1), images.flatten(0, 1))
    return (sum(r.evals for r in refs), ref_s, float(ref_ok.float().mean()),
            int(ours.state.evals.sum()), our_s, float(our_ok.float().mean()), one_time_s)


def run_interleaved_ig(model, images, targets, layout, x0, n_ref, updates, device, compile):
    """As run_interleaved, for Inverting Gradients: `updates` Adam updates each, in rounds of
    IG_UPDATES_PER_STEP (one step of ours)."""
    labels = F.one_hot(idlg_labels(model, targets), layout.num_classes).to(x0.dtype)[:, None]  # [K, 1, classes]
    refs = [ReferenceIG(model, [t[k] for t in targets], layout.images(x0[k:k + 1])[0], labels[k], updates,
                        lr=IG_LR, tv=IG_TV) for k in range(n_ref)]
    objective = ProblemObjective(model, layout, targets, labels, compile=compile, match="cosine", tv=IG_TV)
    one_time_s = compile_objective(objective, x0, device) if compile else 0.0
    ours = BatchedSignedAdam(objective, x0, lr=IG_LR, max_iter=IG_UPDATES_PER_STEP, total_iterations=updates,
                             box=layout.image_numel)
    ref_s = our_s = 0.0
    for _ in range(-(-updates // IG_UPDATES_PER_STEP)):
        start = time.perf_counter()
        for ref in refs:
            for _ in range(IG_UPDATES_PER_STEP):
                ref.step()
        sync(device)
        ref_s += time.perf_counter() - start
        start = time.perf_counter()
        ours.step()
        sync(device)
        our_s += time.perf_counter() - start
    ref_ok = torch.stack([success(r.images.detach(), images[k])[0] for k, r in enumerate(refs)])
    our_ok = success(layout.images(ours.state.x).flatten(0, 1), images.flatten(0, 1))
    return (sum(r.evals for r in refs), ref_s, float(ref_ok.float().mean()),
            int(ours.state.evals.sum()), our_s, float(our_ok.float().mean()), one_time_s)


def peak_memory_mb(device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def default_attack_config(overrides=()):
    """conf/attack/dlg.yaml as the job composes it (the default attack), with `key=value` overrides."""
    cfg = OmegaConf.load(os.path.join(ROOT, "conf", "attack", "dlg.yaml"))
    OmegaConf.set_struct(cfg, True)  # a misspelt key is an error, not a key silently added
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except ConfigKeyError as exc:
        sys.exit(f"error: {' '.join(overrides)}: {exc.msg.splitlines()[0]} (keys: conf/attack/dlg.yaml)")
    OmegaConf.set_struct(cfg, False)
    return cfg


def time_to_verdict(args, device, n_ref: int, k: int) -> dict:
    """Reference (fixed 300 steps, one image at a time) vs our default attack on k targets."""
    torch.manual_seed(args.seed)
    images, labels, test = load_images(args, max(k, n_ref))
    images, labels = images.to(device), labels.to(device)
    model = LeNet(test.shape[0], test.shape[1], test.num_classes).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    targets = shared_gradients(model, images[:n_ref], labels[:n_ref])
    layout = DummyLayout(1, test.shape, test.num_classes, with_labels=True)
    x0 = torch.randn(n_ref, layout.image_numel + test.num_classes,
                     generator=torch.Generator().manual_seed(args.seed + 1)).to(device)
    refs = [ReferenceDLG(model, [t[i] for t in targets], layout.images(x0[i:i + 1])[0],
                         layout.labels(x0[i:i + 1])[0]) for i in range(n_ref)]
    cfg = default_attack_config(args.ours)
    start = time.perf_counter()
    ours = Attack(cfg, model, images[:k], labels[:k], lambda g, **_: g, args.seed, device)
    our_s, ref_s, step = time.perf_counter() - start, 0.0, 0
    for step in range(1, max(REFERENCE_STEPS, ours.loop_steps) + 1):
        if step <= REFERENCE_STEPS:
            start = time.perf_counter()
            for ref in refs:
                ref.step()
            sync(device)
            ref_s += time.perf_counter() - start
        if step <= ours.loop_steps and ours.optimizer.state.running.any():
            start = time.perf_counter()
            ours.advance()
            sync(device)
            our_s += time.perf_counter() - start
    start = time.perf_counter()
    results = ours.results()
    our_s += time.perf_counter() - start
    ref_ok = [bool(success(r.images.detach(), images[i])[0]) for i, r in enumerate(refs)]
    our_ok = [t["success"] for t in results]
    return {"ref_s_per_target": ref_s / n_ref, "our_s_per_target": our_s / k,
            "ref_ok": sum(ref_ok) / n_ref, "our_ok_same": sum(our_ok[:n_ref]) / n_ref,
            "our_ok_all": sum(our_ok) / k, "our_evals": int(ours.optimizer.state.evals.sum()),
            "ref_evals": sum(r.evals for r in refs), "our_restarts": cfg.restarts}


def text_bench(args, device) -> list[tuple[str, object]]:
    """Section 3 of the docstring: the reference loop and ours on the same sentences, inits
    and step budget."""
    from gradleak.text.attack import TextAttack
    from gradleak.text.corpus import load_text
    from gradleak.text.victim import build_text_model
    from gradleak.victim.defenses import defense_from_config

    k = args.problems or 16
    steps = args.steps or (5 if args.quick else 20)
    n_ref = min(args.reference_images, k)
    cfg = OmegaConf.load(os.path.join(ROOT, "conf", "attack", "text.yaml"))
    cfg.num_targets, cfg.steps, cfg.stop.enabled = k, steps, False
    split = load_text(OmegaConf.load(os.path.join(ROOT, "conf", "dataset", "bible.yaml")))
    rows = torch.randperm(len(split), generator=torch.Generator().manual_seed(args.seed))[:k]
    lengths = split.lengths[rows]
    torch.manual_seed(args.seed)
    model = build_text_model(OmegaConf.load(os.path.join(ROOT, "conf", "model", "textlm.yaml")), split.vocab_size)
    ours = TextAttack(cfg, model, split.ids[rows, : int(lengths.max())], lengths, defense_from_config({"name": "none"}),
                      args.seed, device)
    refs = [_TextReference(ours, s) for s in range(n_ref)]
    ref_s, our_s = alternate(refs, ours.optimizer, steps, device)
    ref_evals, our_evals = sum(r.evals for r in refs), int(ours.optimizer.state.evals.sum())
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    return [("device", name), ("attack", "text (DLG's continuous phase, bag-of-words candidates)"),
            ("model", f"textlm, {sum(p.numel() for p in model.parameters())} parameters"), ("steps", steps),
            ("reference_sentences", n_ref), ("reference_evals", ref_evals), ("reference_seconds", f"{ref_s:.2f}"),
            ("reference_evals_per_s", f"{ref_evals / ref_s:.1f}"),
            ("ours_problems", k), ("ours_evals", our_evals), ("ours_seconds", f"{our_s:.2f}"),
            ("ours_evals_per_s", f"{our_evals / our_s:.1f}"),
            ("speedup", f"{(our_evals / our_s) / (ref_evals / ref_s):.2f}")]


class _TextReference:
    """One sentence's continuous phase as a plain loop: torch.optim.LBFGS on the problem's
    initial dummy embeddings and soft labels, the same candidates and match as ours."""

    def __init__(self, attack, s: int):
        from gradleak.text.victim import EMBEDDING

        self.attack, self.s = attack, s
        embedded, logits = attack._split(attack.optimizer.state.x[s:s + 1].clone())
        self.embedded = embedded[0].clone().requires_grad_(True)
        self.logits = logits[0].clone().requires_grad_(True)
        self.kept = [n for n in attack.names if n != EMBEDDING]
        self.params = [dict(attack.model.named_parameters())[n] for n in self.kept]
        self.targets = [attack.targets[attack.names.index(n)][s] for n in self.kept]
        self.opt = torch.optim.LBFGS([self.embedded, self.logits], lr=1, history_size=100, max_iter=20)
        self.evals = 0

    def closure(self):
        a, s = self.attack, self.s
        self.opt.zero_grad()
        for p in self.params:
            p.requires_grad_(True)
        logp = F.log_softmax(a.model(self.embedded, a.valid[s]), dim=-1)
        soft = torch.softmax(torch.where(a.cand_mask[s], self.logits, -torch.inf), dim=-1)
        per_position = -(soft * logp.gather(-1, a.cand[s].expand(len(logp), -1))).sum(-1)
        loss = (per_position * a.valid[s]).sum() / a.valid[s].sum()
        grads = torch.autograd.grad(loss, self.params, create_graph=True)
        match = sum(((g - t) ** 2).sum() for g, t in zip(grads, self.targets))
        match.backward(inputs=[self.embedded, self.logits])
        self.evals += 1
        return match

    def step(self):
        self.opt.step(self.closure)


def main():
    args = parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if args.attack == "text":
        for key, value in text_bench(args, device):
            print(f"{key}: {value}", flush=True)
        return
    k = args.problems or (4096 if device.type == "cuda" else 64)
    ig = args.attack == "ig"
    steps = args.steps or ((400 if args.quick else 4800) if ig else (40 if args.quick else 300))
    n_ref = min(args.reference_images, k)
    model, images, targets, layout, x0 = setup(args, k, device, with_labels=not ig)
    ref_evals, ref_s, ref_ok, our_evals, our_s, our_ok, one_time_s = (run_interleaved_ig if ig else run_interleaved)(
        model, images, targets, layout, x0, n_ref, steps, device, args.compile)
    ref_rate, our_rate = ref_evals / ref_s, our_evals / our_s
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    for key, value in [
        ("device", name), ("attack", args.attack), ("dataset", f"{args.dataset} {tuple(images.shape[2:])}"),
        ("adam_updates" if ig else "steps", steps),
        ("reference_images", n_ref), ("reference_evals", ref_evals), ("reference_seconds", f"{ref_s:.2f}"),
        ("reference_evals_per_s", f"{ref_rate:.1f}"), ("reference_success_rate", f"{ref_ok:.3f}"),
        ("ours_problems", k), ("ours_evals", our_evals), ("ours_seconds", f"{our_s:.2f}"),
        ("ours_evals_per_s", f"{our_rate:.1f}"), ("ours_success_rate", f"{our_ok:.3f}"),
        ("peak_memory_mb", f"{peak_memory_mb(device):.0f}"),
        ("one_time_cost_s", f"{one_time_s:.1f} (torch.compile)" if args.compile else "0 (no compilation)"),
        ("speedup", f"{our_rate / ref_rate:.2f}"),
    ]:
        print(f"{key}: {value}", flush=True)
    if ig:
        return  # the time to verdict compares the published DLG loop with our default attack
    n_verdict = args.verdict_images or (4 if args.quick else 8)
    v = time_to_verdict(args, device, n_verdict, max(args.verdict_targets, n_verdict))
    for key, value in [
        ("verdict_reference_images", f"{n_verdict} x {REFERENCE_STEPS} steps ({v['ref_evals']} evals)"),
        ("verdict_ours_attack", " ".join(["conf/attack/dlg.yaml", *args.ours])),
        ("verdict_ours_targets", f"{max(args.verdict_targets, n_verdict)} x {v['our_restarts']}"
                                 f" restarts ({v['our_evals']} evals)"),
        ("reference_seconds_per_target", f"{v['ref_s_per_target']:.2f}"),
        ("ours_seconds_per_target", f"{v['our_s_per_target']:.2f}"),
        ("reference_success_rate_verdict", f"{v['ref_ok']:.3f}"),
        ("ours_success_rate_same_images", f"{v['our_ok_same']:.3f}"),
        ("ours_success_rate_all_targets", f"{v['our_ok_all']:.3f}"),
        ("time_per_target_speedup", f"{v['ref_s_per_target'] / v['our_s_per_target']:.2f}"),
    ]:
        print(f"{key}: {value}", flush=True)


if __name__ == "__main__":
    main()
