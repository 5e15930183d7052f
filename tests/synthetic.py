"""A small synthetic results tree in the layout sweeps write (metrics.json + snapshots.npz).

Numbers are chosen so tests can check aggregates exactly: every setting's test accuracy
over seeds 0, 1, 2 is base + (seed - 1) * 0.02, so its mean is `base` and its sample
standard deviation 0.02.
"""
import json
import zlib
from pathlib import Path

import numpy as np

from gradleak.job_record import JobRecord
from gradleak.victim.defenses import setting_of

SEEDS = (0, 1, 2)
STEPS = 31
SNAPSHOT_STEPS = [0, 10, 20, 30]
TARGETS = 4
SHAPES = {"mnist": (1, 28, 28), "cifar100": (3, 32, 32)}
# (overrides without seed, defense config, final MSE level, base test accuracy, seeds)
DEFENSES = [
    ([], {"defense.name": "none"}, 1e-5, 0.95, SEEDS),
    (["defense=noise", "noise=gaussian", "scale=0.01"],
     {"defense.name": "noise", "defense.noise": "gaussian", "defense.scale": 0.01,
      "defense.variance": 1e-4}, 3e-4, 0.92, SEEDS),
    (["defense=noise", "noise=gaussian", "scale=0.1"],
     {"defense.name": "noise", "defense.noise": "gaussian", "defense.scale": 0.1,
      "defense.variance": 1e-2}, 5e-2, 0.60, SEEDS),
    (["defense=noise", "noise=laplacian", "scale=0.01"],
     {"defense.name": "noise", "defense.noise": "laplacian", "defense.scale": 0.01,
      "defense.variance": 1e-4}, 6e-4, 0.91, SEEDS),
    (["defense=prune", "ratio=0.1"], {"defense.name": "prune", "defense.ratio": 0.1}, 2e-4, 0.95, SEEDS),
    (["defense=prune", "ratio=0.3"], {"defense.name": "prune", "defense.ratio": 0.3}, 3e-2, 0.94, SEEDS),
    (["defense=precision", "precision=fp16"],
     {"defense.name": "precision", "defense.precision": "fp16"}, 2e-5, 0.95, SEEDS),
    (["defense=precision", "precision=bf16"],
     {"defense.name": "precision", "defense.precision": "bf16"}, 1e-4, 0.93, (0,)),
]
N_DEFENSE_JOBS = sum(len(d[4]) for d in DEFENSES)


def base_config(dataset: str, seed: int, train: bool) -> dict:
    return {"seed": seed, "dataset.name": dataset, "model.name": "lenet",
            "attack.batch_size": 1, "attack.steps": STEPS - 1, "attack.num_targets": TARGETS,
            "attack.restarts": 1, "attack.labels": "soft", "attack.success_mse": 1e-3,
            "train.name": "smoke" if train else "none"}


def _curve(final_mse: float, rng) -> dict:
    step = np.arange(STEPS)
    decay = np.exp(-step / 6)
    mse = final_mse + (0.1 - final_mse) * decay * rng.uniform(0.8, 1.2)
    return {"step": step.tolist(), "evals": (step * 18.5).tolist(),
            "loss_median": (mse * 50).tolist(), "mse_median": mse.tolist(),
            "success_rate": (mse < 1e-3).astype(float).tolist()}


def _targets(final_mse: float, rng) -> list[dict]:
    mses = final_mse * np.exp(rng.normal(0, 0.5, TARGETS))
    # Re-identified below MSE 1e-2: readable but not exact between 1e-3 and 1e-2.
    return [{"target": t, "index": [t], "label": [int(t % 10)], "mse": float(m),
             "psnr": float(-10 * np.log10(m)), "ssim": float(1 - m), "label_acc": 1.0,
             "loss": float(m * 50), "success": bool(m < 1e-3), "diverged": False,
             "evals": 555, "reidentified": float(m < 1e-2), "reid_rank": 1 if m < 1e-2 else 7,
             "distractors": 99} for t, m in enumerate(mses)]


def _snapshots(path: Path, shape, final_mse: float, rng) -> None:
    c, h, w = shape
    blocks = rng.uniform(0, 1, (TARGETS, c, h // 4, w // 4))
    truth = blocks.repeat(4, axis=2).repeat(4, axis=3)
    noise = rng.normal(0.5, 0.3, (TARGETS, *shape))
    recon = [np.clip(truth + (noise - truth) * max(1 - s / 30, np.sqrt(final_mse)), 0, 1)
             for s in SNAPSHOT_STEPS]
    np.savez(path, truth=truth.astype(np.float32), steps=np.array(SNAPSHOT_STEPS),
             recon=np.array(recon, dtype=np.float32))


def write_job(job_dir: Path, overrides, config: dict, final_mse: float, test_acc=None) -> None:
    rng = np.random.default_rng(zlib.crc32(job_dir.name.encode()))
    job_dir.mkdir(parents=True)
    targets = _targets(final_mse, rng)
    mses = np.array([t["mse"] for t in targets])
    train = None if test_acc is None else {
        "test_acc": test_acc, "test_loss": 1 - test_acc, "train_loss": 0.5,
        "baseline_test_acc": 0.95, "utility_drop": 0.95 - test_acc, "wall_s": 12.0, "epochs": 2,
        "curve": {"epoch": [0, 1], "test_acc": [0.5, test_acc], "test_loss": [1, 0.5],
                  "train_loss": [1, 0.5]}}
    record = JobRecord(
        overrides=list(overrides), config=config, attacker=_attacker(config),
        defense=_named(config), device="cpu",
        attack={"mse_mean": float(mses.mean()), "mse_median": float(np.median(mses)),
                "psnr_mean": 30.0, "ssim_mean": 0.9, "label_acc": 1.0,
                "success_rate": float(np.mean(mses < 1e-3)), "loss_median": float(np.median(mses) * 50),
                "diverged_rate": 0.0, "evals_mean": 555.0, "wall_s": 3.5},
        targets=targets, curve=_curve(final_mse, rng),
        snapshots={"file": "snapshots.npz", "steps": SNAPSHOT_STEPS},
        train=train, grid="reconstruction.png",
        mlflow={"tracking_uri": "sqlite:///mlflow.db", "experiment": "gradleak",
                "run_id": f"run-{job_dir.name}", "parent_run_id": "parent"},
    )
    _snapshots(job_dir / "snapshots.npz", SHAPES[config["dataset.name"]], final_mse, rng)
    record.write(job_dir / "metrics.json")


def _attacker(config: dict) -> str:
    """As engine/schema.py:attacker_name names it."""
    name = config.get("attack.name", "dlg")
    return f"{name} adaptive" if config.get("attack.adaptive") else name


def _named(config: dict) -> dict:
    """How the job names its defense setting, as a job does: from the defense's registration."""
    knobs = {k.removeprefix("defense."): v for k, v in config.items()
             if k.startswith("defense.") and k != "defense.variance"}
    return setting_of(knobs)


def _job_name(n: int, overrides) -> str:
    return f"{n}_{','.join(overrides)}"


def write_datasets_stage(root: Path) -> int:
    n = 0
    for dataset in SHAPES:
        for seed in SEEDS:
            ov = [f"dataset={dataset}", f"seed={seed}"]
            write_job(root / "datasets" / _job_name(n, ov), ov,
                      base_config(dataset, seed, False) | {"defense.name": "none"}, 2e-5)
            n += 1
    (root / "datasets" / "multirun.yaml").write_text("hydra: {}\n")
    return n


def write_defenses_stage(root: Path, train: bool = True) -> int:
    n = 0
    for overrides, defense, mse, acc, seeds in DEFENSES:
        for seed in seeds:
            ov = [*overrides, f"seed={seed}"]
            acc_seed = acc + (seed - 1) * 0.02 if train else None
            write_job(root / "defenses" / _job_name(n, ov), ov,
                      base_config("mnist", seed, train) | defense, mse, acc_seed)
            n += 1
    return n


def write_results(root: Path, train: bool = True) -> int:
    """Both stages under `root`; returns the number of jobs."""
    return write_datasets_stage(root) + write_defenses_stage(root, train)


def write_second_attacker(root: Path, final_mse: float = 2e-3) -> int:
    """Inverting Gradients jobs on prune 30% (sub-sweep defenses/ig, as the study's named
    grids write them): readable (re-identified) but rarely exact, where DLG's are neither."""
    overrides, defense, _, acc, seeds = DEFENSES[5]
    for seed in seeds:
        ov = ["attack=ig", *overrides, f"seed={seed}"]
        config = base_config("mnist", seed, True) | defense | {"attack.name": "ig", "attack.adaptive": False}
        write_job(root / "defenses" / "ig" / _job_name(seed, ov), ov, config, final_mse, acc + (seed - 1) * 0.02)
    return len(seeds)


def write_dpsgd_stage(root: Path) -> dict[float, float]:
    """DP-SGD jobs at two noise multipliers, their train block with an epsilon as a job
    writes it; returns {noise_multiplier: epsilon}."""
    epsilons = {0.5: 9.9, 1.0: 1.2}
    for n, (z, eps) in enumerate(epsilons.items()):
        for seed in SEEDS:
            ov = ["defense=dpsgd", "clip=1.0", f"noise_multiplier={z}", f"seed={seed}"]
            config = base_config("mnist", seed, True) | {"defense.name": "dpsgd", "defense.clip": 1.0,
                                                         "defense.noise_multiplier": z}
            job = root / "dpsgd" / _job_name(3 * n + seed, ov)
            write_job(job, ov, config, 5e-2 * z, 0.9 - 0.1 * z + (seed - 1) * 0.02)
            metrics = json.loads((job / "metrics.json").read_text())
            metrics["train"] |= {"epsilon": eps, "delta": 1e-5, "sample_rate": 0.0032, "steps": 3120,
                                 "noise_multiplier": z, "accountant": "rdp"}
            (job / "metrics.json").write_text(json.dumps(metrics))
    return epsilons


ROUNDS = (0, 312, 3119)  # train=smoke on MNIST: 312 steps per epoch, 3120 steps


def rounds_reidentified(round_: int, target: int) -> int:
    """Images (of 16) of a target re-identified at a round: fewer as training goes on."""
    return {0: 16, 312: 8, 3119: 2}[round_] - (target % 2)


def write_rounds_stage(root: Path) -> None:
    """The rounds stage as jobs write it: 4 client updates of 16 train images per job, the
    attack block with its round, at rounds 0, 312 and 3119 of one run per seed; undefended
    (dlg) and prune 30% (dlg adaptive). Target 0 is exact at round 0 only."""
    settings = [("none", [], {"defense.name": "none"}, "dlg"),
                ("prune", ["defense=prune", "ratio=0.3"], {"defense.name": "prune", "defense.ratio": 0.3},
                 "dlg adaptive")]
    n = 0
    for name, overrides, defense, attacker in settings:
        for seed in SEEDS:
            for r in ROUNDS:
                ov = [f"attack={'adaptive' if 'adaptive' in attacker else 'dlg'}", *overrides, f"attack.round={r}",
                      f"seed={seed}"]
                config = base_config("mnist", seed, True) | defense | {
                    "attack.batch_size": 16, "attack.num_targets": 4, "attack.round": r}
                job = root / "rounds" / name / _job_name(n, ov)
                write_job(job, ov, config, 1e-2, 0.95 + (seed - 1) * 0.02)
                n += 1
                m = json.loads((job / "metrics.json").read_text())
                m["attacker"] = attacker
                m["attack"] |= {"round": r, "local_steps": 1, "split": "train"}
                m["train"] |= {"steps": 3120, "epochs": 10}
                for t in m["targets"]:
                    t["index"] = list(range(16 * t["target"], 16 * t["target"] + 16))
                    t["reidentified"] = rounds_reidentified(r, t["target"]) / 16
                    t["success"] = r == 0 and t["target"] == 0
                (job / "metrics.json").write_text(json.dumps(m))
