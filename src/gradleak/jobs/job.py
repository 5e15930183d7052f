"""One job, as the study's protocol: data -> victim -> shared gradient -> defense -> attack
-> quality -> (defended training) -> record (metrics.json, images, one MLflow run).

The attacked update is the victim's at its initial weights on drawn test images, or, with
`attack.round=R`, what the job's own training run's clients sent at step R (their weights,
train batches, local steps and defense: victim.training.intercept_round)."""
import logging
import os
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gradleak.engine.attack import run_attack
from gradleak.engine.quality import summarize_targets, threshold_curves
from gradleak.engine.reidentification import draw_distractors, reid_ranks
from gradleak.engine.schema import attacker_name
from gradleak.job_keys import defines_job, key_of
from gradleak.job_record import JobRecord
from gradleak.jobs import tracking
from gradleak.jobs.config import attacked_batch, validate
from gradleak.jobs.outputs import save_snapshots, snapshot_images
from gradleak.jobs.terminal import format_summary, format_text_summary
from gradleak.jobs.text_job import run_text
from gradleak.report.job_figures import save_grid
from gradleak.text.schema import validate_text
from gradleak.victim.aggregation import attacked_defense, attacked_setting
from gradleak.victim.data import load_split
from gradleak.victim.defenses import defense_from_config
from gradleak.victim.models import build_model

# The logged image series (truth over reconstruction, per snapshot step). Its "attack/" prefix
# gives it a section of its own, and the UI sorts sections by name: it is the run's first chart.
RECONSTRUCTION_KEY = "attack/reconstruction"


def run(cfg: DictConfig) -> float:
    """Run one job; returns the median reconstruction MSE (task=text: the mean token error),
    what a Hydra sweeper optimizes."""
    text = cfg.get("task") == "text"
    if text:
        validate_text(cfg)
    else:
        validate(cfg)
        cfg.attack = attacked_batch(cfg)
    quiet_libraries()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    pl.seed_everything(cfg.seed, verbose=False)
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    overrides = job_overrides()
    params = job_params(cfg)
    tags = {"dataset": cfg.dataset.name, "defense": cfg.defense.name, "attacker": attacker_name(cfg.attack),
            "overrides": " ".join(overrides), **({"task": "text"} if text else {})}
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        tags[tracking.JOB_TAG] = str(HydraConfig.get().job.num)  # the sweep review's row order
    with tracking.job_run(cfg, run_name(overrides), tags) as mlrun:
        mlrun.log_params(params)
        who = {"overrides": overrides, "config": params, "attacker": attacker_name(cfg.attack),
               "defense": attacked_setting(cfg),
               "mlflow": {"tracking_uri": mlrun.uri, "experiment": cfg.tracking.experiment,
                          "experiment_id": mlrun.experiment_id, "run_id": mlrun.run_id,
                          "parent_run_id": cfg.tracking.parent_run_id}}
        if text:
            record = run_text(cfg, who, out_dir, mlrun)
            summary = format_text_summary(record, out_dir)
        else:
            test = load_split(cfg.dataset, "test")
            record, grid = attack_and_report(cfg, test, who, out_dir, mlrun)
            train_and_report(cfg, test, record, out_dir, mlrun)
            summary = format_summary(record, out_dir, grid)
        mlrun.log_artifact(out_dir / "metrics.json")
    print(summary)
    return 1 - record.attack["token_acc"] if text else record.attack["mse_median"]


def quiet_libraries() -> None:
    """Keep the terminal for our progress bars and summary: Lightning's start-up banners
    (accelerator lines, cloud-logging tips) and a torch deprecation it triggers say nothing
    a gradleak user can act on."""
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.WARNING)  # rouge-score's "Using default tokenizer"
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated.*")


def job_overrides() -> list[str]:
    """The user's overrides of this job (what names its MLflow run)."""
    return [o for o in HydraConfig.get().overrides.task if defines_job(o)]


def run_name(overrides: list[str]) -> str:
    """The job's MLflow run name: its overrides, the swept ones first (the runs table cuts
    long names, and the swept value is what tells a sweep's jobs apart)."""
    swept = [k for k in os.environ.get(tracking.SWEPT_ENV, "").split(",") if k]
    first = [o for k in swept for o in overrides if key_of(o) == k]
    return " ".join(first + [o for o in overrides if o not in first]) or "defaults"


def job_params(cfg: DictConfig) -> dict:
    params = tracking.flat_params(cfg)
    variance = attacked_setting(cfg)["variance"]
    if variance == variance:  # not NaN: the defense adds noise
        params["defense.variance"] = variance
    return params


def draw_targets(n_split: int, cfg) -> torch.Tensor:
    """The attacked images: a seeded draw of num_targets x batch_size test indices, so seeds
    differ in which images are attacked as well as in inits and noise."""
    n = cfg.attack.num_targets * cfg.attack.batch_size
    gen = torch.Generator().manual_seed(cfg.seed)
    return torch.randperm(n_split, generator=gen)[:n].reshape(cfg.attack.num_targets, cfg.attack.batch_size)


def attack_and_report(cfg, test, who: dict, out_dir: Path, mlrun) -> tuple[JobRecord, Path]:
    """Attack the drawn test images; judge, write and log the results (the job's record,
    `who` ran it, and the reconstruction grid)."""
    a = cfg.attack
    local = {"local_steps": cfg.train.get("local_steps", 1), "local_lr": cfg.train.get("local_lr", 0.0)}
    if a.round is None:
        index = draw_targets(len(test), cfg)
        images, labels, split, shared = test.images[index], test.labels[index], test, None
        victim = victim_model(cfg, cfg.model.name, test)
    else:
        victim, images, labels, index, shared, split = intercepted(cfg, test)
    outcome = run_attack(a, victim, images, labels, attacked_defense(cfg), cfg.seed,
                         cfg.trainer.accelerator, shared=shared, **local)
    targets, chance = judge(outcome, index, split, cfg)
    p = outcome.progress
    record = JobRecord(
        **who,
        device=outcome.device,
        attack={**summarize_targets(targets, chance), "wall_s": outcome.wall_s,
                "round": a.round, "local_steps": local["local_steps"],
                "split": "test" if a.round is None else "train",
                **{f"stopped_{reason}": n for reason, n in outcome.stopped.items()}},
        targets=targets,
        thresholds=threshold_curves(targets),
        curve={"step": p.step, "evals": p.evals, "loss_median": p.loss_median,
               "mse_median": p.mse_median, "success_rate": p.success_rate},
        snapshots={"file": "snapshots.npz", "steps": p.snapshot_steps},
        grid="reconstruction.png",
    )
    save_snapshots(out_dir / "snapshots.npz", outcome.truth, p.snapshot_steps, p.snapshots)
    mlrun.log_input(attacked_dataset(cfg.dataset, images, labels, index, cfg.seed, record.attack["split"]),
                    context="attack")
    for step, image in zip(p.snapshot_steps, snapshot_images(outcome.truth, p.snapshots)):
        mlrun.log_image(RECONSTRUCTION_KEY, image, step=step)  # one key: the UI's step slider
    mse = [float(((r - t) ** 2).mean()) for r, t in zip(outcome.reconstructions.flatten(0, 1),
                                                        outcome.truth.flatten(0, 1))]
    title = (f"{' '.join(record.overrides) or 'defaults'} | exact {record.attack['success_rate']:.0%}"
             f" | re-identified {record.attack['reid_rate']:.0%}")
    grid = save_grid(out_dir / "reconstruction.png", outcome.truth.flatten(0, 1).numpy(),
                     outcome.reconstructions.flatten(0, 1).numpy(), mse, title)
    record.write(out_dir / "metrics.json")  # written now: kept even if training fails
    mlrun.log_metrics({k: v for k, v in record.attack.items() if isinstance(v, int | float)})
    mlrun.log_series({f"curve/{k}": record.curve[k]
                      for k in ("loss_median", "mse_median", "success_rate", "evals")}, steps=p.step)
    for path in (grid, out_dir / "snapshots.npz"):
        mlrun.log_artifact(path)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    mlrun.log_artifact(out_dir / "config.yaml")
    return record, grid


def intercepted(cfg, test):
    """What the attacker of round cfg.attack.round holds: (the victim at the round's weights,
    the attacked clients' images [n, b, ...], labels [n, b], their rows in the train split,
    their defended updates, the train split)."""
    from gradleak.victim.training import intercept_round, load_train_test, model_name

    splits = load_train_test(cfg, test)
    got, _ = intercept_round(cfg, cfg.attack.round, splits)
    train = splits[0]
    victim = victim_model(cfg, model_name(cfg), train)
    victim.load_state_dict(got["params"])
    n = cfg.attack.num_targets  # clients 0 .. n - 1 (jobs.config.attacked_batch)
    return victim, got["images"][:n], got["labels"][:n], got["index"][:n], [u[:n] for u in got["updates"]], train


def victim_model(cfg, name: str, split):
    """The attacked model for images of `split`, a model-side defense (PRECODE) built in."""
    return defense_from_config(cfg.defense).victim(build_model(name, split.shape[0], split.shape[1], split.num_classes))


def judge(outcome, index: torch.Tensor, split, cfg) -> tuple[list[dict], float]:
    """Both verdicts per target: exact reconstruction (in the attack's results) and
    re-identification among distractors of the split the images come from (`index`: their
    rows in it). Returns (targets, chance)."""
    m = min(cfg.attack.distractors, len(split) - 1)
    pool = draw_distractors(len(split), m, cfg.seed + 1)
    ranks = reid_ranks(outcome.reconstructions.flatten(0, 1), index.flatten(), split.images, pool, m)
    ranks = ranks.reshape(index.shape)
    targets = [{**t, "index": index[i].tolist(), "reid_rank": int(ranks[i].max()),
                "reidentified": float((ranks[i] == 1).float().mean()), "distractors": m}
               for i, t in enumerate(outcome.targets)]
    return targets, 1.0 / (m + 1)


def train_and_report(cfg, test, record: JobRecord, out_dir: Path, mlrun) -> None:
    """Train under the defense (unless train=none) and log what the defense costs."""
    if cfg.train.name == "none":
        return  # metrics.json already says train: null
    from gradleak.victim.training import run_training

    result = run_training(cfg, logger=mlrun.lightning_logger(), test=test)  # per-epoch train/* curves
    tracking.log_training(mlrun, result)
    record.train = result
    record.write(out_dir / "metrics.json")


def attacked_dataset(dataset: DictConfig, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor,
                     seed: int, split: str = "test"):
    """The attacked images as an MLflow dataset: named by the dataset, split and seed, its
    source lists their indices in the split, its digest is of the pixels and labels."""
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource

    indices = ",".join(map(str, index.flatten().tolist()))
    where = {k: str(v) for k in ("path", "test_fraction", "size", "channels") if (v := dataset.get(k)) is not None}
    source = CodeDatasetSource({"dataset": dataset.name, "split": split, "seed": str(seed), "indices": indices,
                                **where})
    return mlflow.data.from_numpy(images.flatten(0, 1).numpy(), source=source, targets=labels.flatten().numpy(),
                                  name=f"{dataset.name} {split}, {index.numel()} drawn by seed {seed}")
