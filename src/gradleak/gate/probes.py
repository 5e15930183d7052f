"""The behaviour probes: short, seeded runs of every code path the study's jobs take, each
reduced to numbers that are stable across machines.

Float results drift between machines (other kernels, other summation orders) and L-BFGS
amplifies the drift: in float32, two thread counts already differ by 1e-4 after about 15
objective evaluations of DLG, and a rounding defense flips a rounding at once. So the
attack, defense and training probes run the study's code in float64 (the code follows its
inputs' dtype), where the same comparison stays exact over hundreds of evaluations, and
none runs long: an attack's first steps, a training's first steps, a defense applied once.
Whole jobs run as the study runs them (float32) and record only what is exact: the drawn
targets, and the verdicts of problems that converge hard (the undefended attack on the
bundled digits). Stop rules are fed a fixed loss trace, so their decisions are exact.
Every probe runs on the bundled digits (or small image files written here in each loader's
format): no network, no data.

A probe is named by what it exercises (`attack/dlg adaptive/prune`); `probes_of(cfg)` names
the probes a study job depends on, so the gate knows which stages a moved probe reruns.
"""
import contextlib
import io
import logging
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

from gradleak import project_root
from gradleak.engine.schema import attacker_name

# The representative setting of each defense key (the study's knobs vary per job; their
# values are in the jobs' configs, which the gate compares exactly).
DEFENSE_SETTINGS = {
    "none": ["defense=none"],
    "noise-gaussian": ["defense=noise", "noise=gaussian", "scale=0.031623"],
    "noise-laplacian": ["defense=noise", "noise=laplacian", "scale=0.031623"],
    "prune": ["defense=prune", "ratio=0.3"],
    "precision-fp16": ["defense=precision", "precision=fp16"],
    "precision-bf16": ["defense=precision", "precision=bf16"],
    "precision-int8": ["defense=precision", "precision=int8"],
    "dpsgd": ["defense=dpsgd", "clip=1.0", "noise_multiplier=0.5"],
    "soteria": ["defense=soteria", "percent=40"],
    # k = 2: the probes' pool is TARGETS images; mixed labels are attacked with soft dummy labels
    "mixup": ["defense=mixup", "k=2", "attack.labels=soft"],
    "instahide": ["defense=instahide", "k=2", "attack.labels=soft"],
    # a bottleneck of 16 keeps the probe small; its labels are learned (iDLG's rule assumes the output
    # layer's inputs are non-negative, which PRECODE's decoder does not keep)
    "precode": ["defense=precode", "bottleneck=16", "attack.labels=soft"],
}
# Paths a study attack takes only after many steps, reached in ATTACK_STEPS: DLG's restarts
# are staggered (two restarts one step apart) and its L-BFGS history fills (and shifts).
LONG_RUN_PATHS = ["attack.restarts=2", "attack.stop.restart_delay=1", "attack.history_size=4"]
ATTACKERS = {"dlg": ["attack=dlg", *LONG_RUN_PATHS], "ig": ["attack=ig"],
             "dlg adaptive": ["attack=adaptive", *LONG_RUN_PATHS]}
# The study's training profile, cut to a few steps on the bundled digits.
SHORT_TRAINING = ["train=smoke", "train.max_train_images=256", "train.max_test_images=120", "train.epochs=1"]
TEXT_ATTACKERS = {"text": ["attack=text"], "text adaptive": ["attack=text", "attack.adaptive=true"],
                  "text_cosine": ["attack=text_cosine"], "text_tag": ["attack=text_tag"]}
# The text stage's training profile, cut to a few steps (3 global batches of 64 sentences).
SHORT_TEXT_TRAINING = ["train=text_smoke", "train.max_train_sentences=192", "train.max_test_sentences=40",
                       "train.epochs=1"]
ATTACK_STEPS = 2  # the attack probes' own steps (each up to max_iter evaluations)
TARGETS = 2
SNAPSHOT_STEPS = 9  # the snapshots probe: an attack shorter than attack.steps' default
TRAIN_STEPS = 3  # training probes: the server's weights and the clients' updates at this step
# The verdicts probe: blend weights of another image into each target, and distractors fewer
# than the bundled digits' test split (a pool of the whole split is the same for every draw).
BLENDS = (0.0, 0.2, 0.35, 0.45, 0.5, 0.55, 0.65, 0.9)
VERDICT_DISTRACTORS = 40


def defense_key(defense: DictConfig) -> str:
    """The defense's code path: its name and its string knobs (noise-laplacian, precision-int8)."""
    strings = [str(v) for k, v in defense.items() if k != "name" and isinstance(v, str)]
    return "-".join([defense.name, *strings])


def dataset_key(dataset: DictConfig) -> str:
    return dataset.name if dataset.name in ("digits", "npz", "imagefolder") else "torchvision"


def probes_of(cfg: DictConfig) -> set[str]:
    """The probes whose code a study job runs."""
    a, key = cfg.attack, defense_key(cfg.defense)
    who = attacker_name(a)
    if cfg.get("task") == "text":
        names = {f"text/{who}/{key}", f"defense/{key}", "job/text", "stop_rules"}
        return names | ({f"text-training/{key}", "job/text-train"} if cfg.train.name != "none" else set())
    names = {f"data/{dataset_key(cfg.dataset)}", f"defense/{key}", "job/attack", f"model/{cfg.model.name}",
             "verdicts"}
    if a.round is not None:
        names |= {f"round/{who}/{key}", f"training/{key}", "job/round"}
    else:
        names.add(f"attack/{who}/{key}" + ("/batch" if a.batch_size > 1 else ""))
    if a.batch_size > 1:
        names.add("job/batch")
    if cfg.train.name != "none":
        names |= {f"training/{key}", "job/train", f"model/{cfg.train.get('model') or cfg.model.name}"}
    if a.stop.enabled:
        names.add("stop_rules")
    return names


# --- numbers from tensors ------------------------------------------------------------------------

def summary(t: torch.Tensor) -> list[float]:
    """[norm, cosine with two fixed random directions]: moves when any part of t moves,
    and is not fooled by a permutation or a sign."""
    flat = t.detach().double().flatten().cpu()
    gen = torch.Generator().manual_seed(len(flat))
    w = torch.randn((2, len(flat)), generator=gen, dtype=torch.float64)
    norm = float(flat.norm())
    cos = (w @ flat) / (w.norm(dim=1) * norm) if norm > 0 else torch.zeros(2, dtype=torch.float64)
    return [norm, *map(float, cos)]


def summaries(tensors) -> list[list[float]]:
    return [summary(t) for t in tensors]


# --- composing configs and running quietly -----------------------------------------------------

def job_config(overrides: list[str], work: Path, with_hydra: bool = False) -> DictConfig:
    """A job's config from conf/, with its caches, tracking and outputs under `work`."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(project_root() / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", return_hydra_config=with_hydra,
                      overrides=[*overrides, "threads=1", f"data_dir={work / 'data'}",
                                 f"tracking.uri=sqlite:///{work / 'mlflow.db'}", "tracking.parent_run_id=null"])
    with open_dict(cfg):
        cfg.train.cache_dir = str(work / "cache")
    return cfg


@contextlib.contextmanager
def quiet():
    """No progress bars or library chatter: the gate prints one line per probe."""
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def float64():
    """Models built inside have float64 weights (torch's default dtype)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _digits_victim(cfg, n: int):
    """The victim (float64) and the first n x batch_size test digits (float64)."""
    from gradleak.victim.data import load_split
    from gradleak.victim.defenses import defense_from_config
    from gradleak.victim.models import build_model

    test = load_split(cfg.dataset, "test")
    torch.manual_seed(cfg.seed)
    with float64():  # a model-side defense (PRECODE) built in
        model = defense_from_config(cfg.defense).victim(
            build_model(cfg.model.name, test.shape[0], test.shape[1], test.num_classes))
    k = n * cfg.attack.batch_size
    return model, test.images[:k].double(), test.labels[:k]


# --- the probes ----------------------------------------------------------------------------------

def probe_defense(key: str, work: Path) -> dict:
    """The defense applied once to the victim's gradients of two targets (per-sample for DP-SGD)."""
    from gradleak.jobs.config import validate
    from gradleak.victim.defenses import defense_from_config, setting_of
    from gradleak.victim.gradients import draw_noise, per_sample_gradients, shared_gradients

    cfg = job_config(DEFENSE_SETTINGS[key], work)
    validate(cfg)
    model, images, labels = _digits_victim(cfg, TARGETS)
    images, labels = images[:, None], labels[:, None]
    defense = defense_from_config(cfg.defense)
    generator = torch.Generator().manual_seed(1)
    encoded = {}
    if defense.encodes:
        enc = defense.encode(images[:, 0], labels[:, 0], 10, generator)
        images, labels = enc.images[:, None], enc.soft_labels[:, None]
        encoded = {"encoded": summaries([enc.images, enc.soft_labels, enc.coefficients]),
                   "decoded": summaries([defense.adaptive.decode(enc.images, enc)])}
    noise = draw_noise(model, tuple(labels.shape), generator, images.dtype)  # PRECODE: the client's draw
    if defense.per_sample:
        grads, _ = per_sample_gradients(model, images, labels, noise)
    else:
        grads = shared_gradients(model, images, labels, noise=noise)
    data = (model, images) if defense.needs_data else None
    defended = defense(grads, generator=generator, batch_dims=1, data=data)
    return {"defended": summaries(defended), "setting": setting_of(cfg.defense), **encoded}  # how tables name it


def probe_attack(attacker: str, key: str, work: Path, batch: int = 1, extra: tuple[str, ...] = (),
                 local_steps: int = 1) -> dict:
    """ATTACK_STEPS steps of the attacker on two digits through the defense: the loss median
    after each step, each target's loss and MSE at the end."""
    from gradleak.engine.attack import run_attack
    from gradleak.victim.aggregation import attacked_defense

    cfg = job_config([*ATTACKERS[attacker], *DEFENSE_SETTINGS[key], f"attack.num_targets={TARGETS}",
                      f"attack.batch_size={batch}", f"attack.steps={ATTACK_STEPS}", *extra], work)
    model, images, labels = _digits_victim(cfg, TARGETS)
    images, labels = images.reshape(TARGETS, batch, *images.shape[1:]), labels.reshape(TARGETS, batch)
    outcome = run_attack(cfg.attack, model, images, labels, attacked_defense(cfg), cfg.seed,
                         "cpu", progress_bar=False, local_steps=local_steps, local_lr=0.1 * (local_steps > 1))
    return {"loss_median": outcome.progress.loss_median,
            "loss": [t["loss"] for t in outcome.targets], "mse": [t["mse"] for t in outcome.targets]}


def probe_training(key: str, work: Path, extra: tuple[str, ...] = ()) -> dict:
    """The study's training profile under the defense, intercepted at step TRAIN_STEPS: the
    server's weights there and every client's defended update."""
    cfg = job_config([*DEFENSE_SETTINGS[key], *SHORT_TRAINING, *extra], work)
    got = _intercept_float64(cfg)
    return {"weights": summaries(got["params"].values()), "updates": summaries(got["updates"]),
            "index": got["index"].flatten().tolist()}


def _intercept_float64(cfg) -> dict:
    """intercept_round at TRAIN_STEPS on float64 splits and weights; cached in the job's
    cache_dir, where jobs.job.intercepted finds it."""
    from gradleak.victim.data import Split
    from gradleak.victim.training import intercept_round, load_train_test

    splits = tuple(Split(s.images.double(), s.labels, s.num_classes) for s in load_train_test(cfg))
    with float64():
        got, _ = intercept_round(cfg, TRAIN_STEPS, splits)
    return got


def probe_round(attacker: str, key: str, work: Path) -> dict:
    """The attack on an intercepted round (its clients' defended updates, the server's weights)."""
    from gradleak.engine.attack import run_attack
    from gradleak.jobs.config import attacked_batch
    from gradleak.jobs.job import intercepted
    from gradleak.victim.data import load_split
    from gradleak.victim.defenses import defense_from_config

    cfg = job_config([*ATTACKERS[attacker], *DEFENSE_SETTINGS[key], *SHORT_TRAINING, f"attack.round={TRAIN_STEPS}",
                      "attack.num_targets=1", f"attack.steps={ATTACK_STEPS}"], work)
    cfg.attack = attacked_batch(cfg)
    _intercept_float64(cfg)
    with float64():
        victim, images, labels, _, shared, _ = intercepted(cfg, load_split(cfg.dataset, "test"))
    outcome = run_attack(cfg.attack, victim, images, labels, defense_from_config(cfg.defense), cfg.seed, "cpu",
                         progress_bar=False, shared=shared)
    return {"loss_median": outcome.progress.loss_median, "mse": [t["mse"] for t in outcome.targets]}


def probe_lenet(work: Path) -> dict:
    """DLG's LeNet: its size for the paper's CIFAR-100 input (85,036 parameters) and its
    seeded uniform init."""
    from gradleak.victim.models import build_model

    torch.manual_seed(0)
    with float64():
        model = build_model("lenet", 3, 32, 100)
    return {"parameters": sum(p.numel() for p in model.parameters()), "init": summaries(model.parameters())}


def probe_snapshots(work: Path) -> dict:
    """The snapshots a job keeps (figures draw the datasets stage's): undefended DLG on two
    digits for SNAPSHOT_STEPS steps, and the schedule of attacks that ended at other steps."""
    from gradleak.engine.attack import run_attack
    from gradleak.engine.snapshots import Snapshots
    from gradleak.victim.defenses import defense_from_config

    cfg = job_config(["attack=dlg", f"attack.num_targets={TARGETS}", f"attack.steps={SNAPSHOT_STEPS}"], work)
    model, images, labels = _digits_victim(cfg, TARGETS)
    outcome = run_attack(cfg.attack, model, images[:, None], labels[:, None], defense_from_config(cfg.defense),
                         cfg.seed, "cpu", progress_bar=False)
    schedule = {}
    for last in (25, 300, 2000):
        frames = Snapshots(cfg.attack.snapshots)
        for step in range(last + 1):
            frames.offer(step, torch.zeros(1))
        schedule[str(last)] = frames.chosen()[0]
    return {"steps": outcome.progress.snapshot_steps, "frames": summaries(outcome.progress.snapshots),
            "schedule": schedule}


def probe_verdicts(work: Path) -> dict:
    """An image job's verdicts (jobs.job.judge) on reconstructions at set distances from their
    targets: each truth blended with another drawn image at weights from 0 to 0.9, ranked among
    VERDICT_DISTRACTORS of the split's images, so the ranks move with which distractors the job
    draws and how it ranks them (the converging job probe's are all rank 1, whatever the draw)."""
    from types import SimpleNamespace

    from gradleak.jobs.job import draw_targets, judge
    from gradleak.victim.data import load_split

    cfg = job_config([f"attack.num_targets={len(BLENDS)}", f"attack.distractors={VERDICT_DISTRACTORS}"], work)
    test = load_split(cfg.dataset, "test")
    index = draw_targets(len(test), cfg)
    weight = torch.tensor(BLENDS, dtype=test.images.dtype).view(-1, 1, 1, 1, 1)
    recon = (1 - weight) * test.images[index] + weight * test.images[index.roll(1, 0)]
    outcome = SimpleNamespace(reconstructions=recon, targets=[{} for _ in BLENDS])
    targets, chance = judge(outcome, index, test, cfg)
    return {"reid_rank": [t["reid_rank"] for t in targets], "reidentified": [t["reidentified"] for t in targets],
            "distractors": [t["distractors"] for t in targets], "chance": chance}


def probe_stop_rules(work: Path) -> dict:
    """The stop rules (the study's settings) on a fixed trace of 3 targets x 3 restarts: one
    converging, one levelling off (it stalls), one improving slowly to the budget; each
    target's later restarts start far above its first (they lose)."""
    from types import SimpleNamespace

    from gradleak.engine.optimizers import RUNNING, STOPPED
    from gradleak.engine.stopping import StopRules

    cfg = job_config([], work)
    restarts, steps = cfg.attack.restarts, cfg.attack.steps
    k = 3 * restarts
    rules = StopRules(cfg.attack.stop, restarts, k, steps, "cpu")
    state = SimpleNamespace(loss=torch.ones(k, dtype=torch.float64), status=torch.full((k,), RUNNING),
                            steps=torch.zeros(k, dtype=torch.long))
    rules.hold_restarts(state)
    initial = torch.ones(k, dtype=torch.float64)
    traces = [lambda n: 0.5 ** n, lambda n: 0.3 + 0.7 * 0.8 ** n, lambda n: 0.97 ** n]
    offset = torch.tensor([1.0, 30.0, 3000.0], dtype=torch.float64).repeat(3)  # restart r starts higher
    for _ in range(rules.loop_steps):
        running = torch.nonzero(state.status == RUNNING).squeeze(1)
        if running.numel() == 0:
            break
        state.steps[running] += 1
        for p in running.tolist():
            state.loss[p] = offset[p] * traces[p // restarts](float(state.steps[p]))
        rules.apply(running, state, initial)
        spent = running[(state.status[running] == RUNNING) & (state.steps[running] >= steps)]
        state.status[spent] = STOPPED
    return {"reasons": rules.reasons(state.status), "stop_step": rules.step.tolist(),
            "steps": state.steps.tolist()}


def probe_data(key: str, work: Path) -> dict:
    """The loader of the study's datasets on files in its format (seeded pixels)."""
    from gradleak.victim.data import load_split

    overrides = {"digits": ["dataset=digits"], "torchvision": ["dataset=mnist"],
                 "npz": ["dataset=npz", f"path={work / 'images.npz'}"],
                 "imagefolder": ["dataset=imagefolder", f"path={work / 'folder'}"]}[key]
    cfg = job_config(overrides, work)
    write_image_files(work, key)
    out = {}
    for split in ("train", "test"):
        s = load_split(cfg.dataset, split)
        out[split] = {"shape": list(s.images.shape), "classes": s.num_classes,
                      "images": summary(s.images), "labels": s.labels.tolist()[:50]}
    return out


def write_image_files(work: Path, key: str) -> None:
    """Seeded images in the loader's format: MNIST's IDX files, an .npz, an ImageFolder."""
    rng = np.random.default_rng(0)
    if key == "torchvision":
        raw = work / "data" / "MNIST" / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for prefix, n in (("train", 60), ("t10k", 20)):
            pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            labels = rng.integers(0, 10, n, dtype=np.uint8)
            (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
                np.array([2051, n, 28, 28], dtype=">i4").tobytes() + pixels.tobytes())
            (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(np.array([2049, n], dtype=">i4").tobytes()
                                                               + labels.tobytes())
    elif key == "npz":
        np.savez(work / "images.npz", x=rng.integers(0, 256, (40, 12, 12, 3), dtype=np.uint8),
                 y=rng.integers(0, 5, 40), class_names=np.array(list("abcde")))
    elif key == "imagefolder":
        from PIL import Image

        for i in range(12):
            folder = work / "folder" / f"person{i % 3}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def probe_job(overrides: list[str], work: Path, converges: bool = False) -> dict:
    """One whole job (jobs.job.run: draw, attack, verdicts, training, records) as the study
    runs it; its drawn targets and verdicts (or training results) from its metrics.json."""
    import json

    from gradleak.jobs.job import run

    out = work / "job"
    cfg = job_config(overrides, work, with_hydra=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out)
    out.mkdir(parents=True, exist_ok=True)
    HydraConfig.instance().set_config(cfg)
    job_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    run(job_cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    record = {"index": [t["index"] for t in metrics["targets"]], "split": metrics["attack"]["split"]}
    text = metrics["config"].get("task") == "text"
    if metrics["train"]:
        t = metrics["train"]
        record["train"] = {k: t[k] for k in ("test_loss", "train_loss", "steps", "epsilon")
                           if t.get(k) is not None}
        again = _train_again(job_cfg, text)  # the next attacker of this training: from the cache
        record["cached_again"] = [again["cached"], again["cached_baseline"], again["test_loss"] == t["test_loss"]]
    elif text:  # undefended text converges hard: exact everywhere
        record.update({k: [t[k] for t in metrics["targets"]] for k in ("recovered", "success", "reid_rank")})
    elif converges:  # it converges hard: its verdicts hold on every machine
        record.update({"predicted": [t["predicted"] for t in metrics["targets"]],
                       "exact": [t["success"] for t in metrics["targets"]],
                       "reid_rank": [t["reid_rank"] for t in metrics["targets"]]})
    return record


def _train_again(job_cfg, text: bool) -> dict:
    if text:
        from gradleak.text.corpus import load_text_parts
        from gradleak.text.training import run_text_training

        return run_text_training(job_cfg, load_text_parts(job_cfg.dataset))
    from gradleak.victim.training import run_training

    return run_training(job_cfg)


def probe_text_training(key: str, work: Path) -> dict:
    """The text stage's training profile under the defense, a few steps in float64: each
    epoch's losses (training and held-out) and masked-token accuracy."""
    from gradleak.text.corpus import load_text_parts
    from gradleak.text.training import run_text_training

    cfg = job_config(["task=text", *DEFENSE_SETTINGS[key], *SHORT_TEXT_TRAINING], work)
    parts = load_text_parts(cfg.dataset)
    with float64():
        result = run_text_training(cfg, parts)
    return {k: result["curve"][k] for k in ("train_loss", "test_loss", "test_acc")} | {
        "steps": result["steps"], "epsilon": result.get("epsilon")}


# --- code no stage of the study runs (docs/fingerprint/library.json) ---------------------------

def probe_reference(attack: str, work: Path) -> dict:
    """The published one-image loops (the baselines of scripts/bench.py), a few steps."""
    from gradleak.engine.published import ReferenceIG, reference_dlg
    from gradleak.victim.gradients import shared_gradients

    cfg = job_config([], work)
    model, images, labels = _digits_victim(cfg, 1)
    target = [g[0] for g in shared_gradients(model, images[:, None], labels[:, None])]
    gen = torch.Generator().manual_seed(0)
    images0 = torch.randn(images.shape, generator=gen, dtype=torch.float64)
    if attack == "dlg":
        logits0 = torch.randn((1, 10), generator=gen, dtype=torch.float64)
        _, _, losses, evals = reference_dlg(model, target, images0, logits0, steps=2)
        return {"losses": losses.tolist(), "evals": evals}
    ig = ReferenceIG(model, target, images0, torch.nn.functional.one_hot(labels, 10).double(), iterations=20)
    return {"losses": [ig.step() for _ in range(20)]}


def probe_resnet(work: Path) -> dict:
    """ResNet-20 (model=resnet20): its gradient on two digits."""
    from gradleak.victim.gradients import shared_gradients
    from gradleak.victim.models import build_model

    torch.manual_seed(0)
    with float64():
        model = build_model("resnet20", 1, 8, 10)
    cfg = job_config([], work)
    _, images, labels = _digits_victim(cfg, TARGETS)
    return {"gradient": summaries(shared_gradients(model.eval(), images[:, None], labels[:, None]))}


def probe_text(attacker: str, key: str, work: Path) -> dict:
    """task=text: the drawn sentences, then ATTACK_STEPS continuous steps and 3 rounds of
    discrete moves of the text attacker on two of them through the defense, in float64: the
    loss median per step, the bag's size and the final matches."""
    from gradleak.jobs.text_job import draw_sentences
    from gradleak.text.attack import run_text_attack
    from gradleak.text.corpus import load_text
    from gradleak.text.victim import build_text_model
    from gradleak.victim.defenses import defense_from_config

    cfg = job_config(["task=text", *TEXT_ATTACKERS[attacker], *DEFENSE_SETTINGS[key], f"attack.num_targets={TARGETS}",
                      f"attack.steps={ATTACK_STEPS}", "attack.discrete_steps=3"], work)
    split = load_text(cfg.dataset)
    rows = draw_sentences(len(split), cfg)
    lengths = split.lengths[rows]
    torch.manual_seed(cfg.seed)
    with float64():
        model = build_text_model(cfg.model, split.vocab_size)
    out = run_text_attack(cfg.attack, model, split.ids[rows, : int(lengths.max())], lengths,
                          defense_from_config(cfg.defense), cfg.seed, "cpu", progress_bar=False)
    return {"rows": rows.tolist(), "loss_median": out.progress.loss_median, "candidates": out.candidates,
            "discrete_match": out.discrete_match, "moves": out.moves}


LIBRARY = {  # name -> probe: the paper profile's and a GPU's paths, other optimizers, baselines
    "library/reference-dlg": lambda w: probe_reference("dlg", w),
    "library/reference-ig": lambda w: probe_reference("ig", w),
    "library/resnet20": probe_resnet,
    "library/adam": lambda w: probe_attack("dlg", "none", w, extra=("attack.optimizer=adam", "attack.lr=0.1")),
    "library/chunked": lambda w: probe_attack("dlg", "prune", w, extra=("attack.chunk_size=1",)),
    "library/fedavg-attack": lambda w: probe_attack("dlg", "none", w, local_steps=2),
    "library/fedavg-training": lambda w: probe_training("none", w, extra=("train.local_steps=2",)),
    "library/vectorized-training": lambda w: probe_training("noise-gaussian", w, extra=("train.vectorize=true",)),
    "library/secure-aggregation": lambda w: probe_attack("dlg", "dpsgd", w, batch=2, extra=("aggregation=secure",)),
    "library/soteria-defense": lambda w: probe_defense("soteria", w),
    "library/soteria-attack": lambda w: probe_attack("dlg adaptive", "soteria", w),
    "library/soteria-training": lambda w: probe_training("soteria", w),
}


# --- the registry ------------------------------------------------------------------------------

CONVERGES = "job/attack"  # undefended DLG on 4 digits: exact and re-identified on every machine
JOBS = {  # whole jobs, as the study's kinds of jobs run them (sized down)
    "job/attack": ["attack.num_targets=4"],
    "job/batch": ["attack.num_targets=2", "attack.batch_size=2", "attack.steps=2"],
    "job/train": [*DEFENSE_SETTINGS["dpsgd"], *SHORT_TRAINING, "attack.num_targets=1", "attack.steps=2"],
    "job/round": [*DEFENSE_SETTINGS["noise-gaussian"], *SHORT_TRAINING, f"attack.round={TRAIN_STEPS}",
                  "attack.num_targets=1", "attack.steps=2"],
    "job/text": ["task=text", "attack.num_targets=2"],  # undefended: exact on every machine
    "job/text-train": ["task=text", *DEFENSE_SETTINGS["dpsgd"], *SHORT_TEXT_TRAINING, "attack.num_targets=1",
                       "attack.steps=2", "attack.discrete_steps=2"],
}


def run_probe(name: str, work: Path) -> dict:
    """The probe `name` (kind/args, as probes_of names them), run in the folder `work`."""
    kind, _, rest = name.partition("/")
    if name in LIBRARY:
        return LIBRARY[name](work)
    if kind == "stop_rules":
        return probe_stop_rules(work)
    if name == "snapshots":
        return probe_snapshots(work)
    if name == "verdicts":
        return probe_verdicts(work)
    if name == "model/lenet":  # the other models are the library's (model=resnet20)
        return probe_lenet(work)
    if kind == "data":
        return probe_data(rest, work)
    if kind == "defense":
        return probe_defense(rest, work)
    if kind == "training":
        return probe_training(rest, work)
    if kind == "text-training":
        return probe_text_training(rest, work)
    if kind == "job":
        return probe_job(JOBS[name], work, converges=name == CONVERGES)
    attacker, key, *batch = rest.split("/")
    if kind == "text":
        return probe_text(attacker, key, work)
    if kind == "attack":
        return probe_attack(attacker, key, work, batch=2 if batch else 1)
    if kind == "round":
        return probe_round(attacker, key, work)
    raise KeyError(name)


def check_names(names) -> None:
    """Every probe a study job needs exists: a new kind of job needs its probe first."""
    unknown = []
    for name in names:
        kind, _, rest = name.partition("/")
        parts = rest.split("/")
        known = (name in ("stop_rules", "snapshots", "verdicts", "model/lenet") or name in JOBS or name in LIBRARY
                 or (kind == "data" and rest in ("digits", "torchvision", "npz", "imagefolder"))
                 or (kind in ("defense", "training", "text-training") and rest in DEFENSE_SETTINGS)
                 or (kind in ("attack", "round") and len(parts) in (2, 3) and parts[0] in ATTACKERS
                     and parts[1] in DEFENSE_SETTINGS and parts[2:] in ([], ["batch"]))
                 or (kind == "text" and len(parts) == 2 and parts[0] in TEXT_ATTACKERS
                     and parts[1] in DEFENSE_SETTINGS))
        if not known:
            unknown.append(name)
    if unknown:
        raise KeyError(f"no probe for {', '.join(sorted(unknown))}: add it to gradleak/gate/probes.py")


def run_probes(names, progress: Callable[[str], None] = lambda name: None) -> dict[str, dict]:
    """The named probes' records, one thread, each in a temporary folder."""
    check_names(names)
    torch.set_num_threads(1)
    records = {}
    for name in sorted(names):
        progress(name)
        with tempfile.TemporaryDirectory(prefix="gradleak-probe-") as work, quiet():
            records[name] = run_probe(name, Path(work))
    GlobalHydra.instance().clear()
    return records
