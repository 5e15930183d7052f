"""The defense study as sweeps: which `run.py -m` commands each stage of dvc.yaml runs.

The study is a Hydra config: conf/study/<profile>.yaml (seeds, dataset, attack and training
sizes) composed with conf/study/stages.yaml (each stage's sweeps, conf/experiment/<name>.yaml,
whose grids the profile sizes); params.yaml names the profile.
scripts/sweep.py launches these sweeps; the study gate (gradleak.gate) composes every job
of them, so what it fingerprints is what the sweeps run.
"""
from dataclasses import dataclass
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from gradleak import project_root

STUDY_DIR = project_root() / "conf" / "study"
EXPERIMENT_DIR = project_root() / "conf" / "experiment"
# An experiment's keys that the profile sets (sizes, seeds, rounds); the rest is its grid.
PROFILE_KEYS = ("dataset", "seed", "attack.num_targets", "attack.steps", "attack.round", "train", "train.keep_rounds")
SURVEYS = ("datasets", "batch")  # sized by the profile's survey, attack only
ROUNDS = "rounds"  # attacks rounds of the profile's training (the profile's `rounds`)
TEXT = "text"  # task=text, sized and trained by the profile's `text`
SECURE = "secure"  # attack only, at the defense stages' size with the profile's `secure` seeds
STAGES = ("datasets", "undefended", "noise", "prune", "precision", "dpsgd", "batch", "rounds", "text",
          "later", "secure")  # dvc.yaml's


@dataclass(frozen=True)
class Sweep:
    """One `run.py -m` of a stage: its folder under results/sweeps/<stage> ("" = the stage's
    own), its overrides (before data_dir and hydra's), and whether a missing dataset skips it."""
    folder: str
    overrides: tuple[str, ...]
    skip_missing: bool = False


def load_study(profile: str) -> DictConfig:
    """conf/study/<profile>.yaml, composed through Hydra's compose API."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(STUDY_DIR), version_base="1.3"):
        return compose(config_name=profile)


def stage_sweeps(study: DictConfig, stage: str, root: Path | None = None) -> list[Sweep]:
    """The sweeps of `stage`. The datasets stage attacks the user's extra image sets only
    where their path exists under `root` (None: all of them, as the gate fingerprints them)."""
    if stage == "datasets":
        return _dataset_sweeps(study, root)
    if stage not in study.stages:
        raise KeyError(f"stage={stage}: allowed datasets, {', '.join(study.stages)}")
    if stage == TEXT:
        return [Sweep(name.removeprefix(f"{TEXT}_"), (*experiment_grid(name), *study.text.attack, *study.text.train,
                                                                _seeds(study.text)))
                for name in study.stages[stage]]
    survey = stage in SURVEYS
    size = study.survey if survey else study
    # Every trained job keeps the rounds stage's rounds, so that stage replays no training.
    trained = [*study.train, "train.keep_rounds=[" + ",".join(map(str, study.rounds.at)) + "]"]
    seeds = _seeds(study.secure if stage == SECURE else size)
    sizes = [f"dataset={study.dataset}", *size.attack, *([] if survey else trained), seeds]
    untrained_sizes = [f"dataset={study.dataset}", *size.attack, "train=none", seeds]
    if stage == ROUNDS:  # the training's rounds and clients the profile names
        sizes += ["attack.round=" + ",".join(map(str, study.rounds.at)), f"attack.num_targets={study.rounds.clients}"]
    return [Sweep(name.removeprefix(stage).removeprefix("_"),
                  (*experiment_grid(name), *(untrained_sizes if untrained(name) else sizes)))
            for name in study.stages[stage]]


def untrained(name: str) -> bool:
    """An experiment whose grid says train: none is attacked only (Soteria: its training scores
    every image's representation Jacobian at every step, hours per run on CPUs)."""
    return OmegaConf.load(EXPERIMENT_DIR / f"{name}.yaml").hydra.sweeper.params.get("train") == "none"


def experiment_grid(name: str) -> list[str]:
    """conf/experiment/<name>.yaml's sweep without the keys the profile sets."""
    params = OmegaConf.load(EXPERIMENT_DIR / f"{name}.yaml").hydra.sweeper.params
    return [f"{k}={v}" for k, v in params.items() if k not in PROFILE_KEYS]


def _dataset_sweeps(study: DictConfig, root: Path | None) -> list[Sweep]:
    """Undefended attack on every dataset, one sweep each; a dataset missing here is skipped."""
    jobs = {name: [f"dataset={name}"] for name in study.datasets}
    jobs.update({name: list(overrides) for name, overrides in study.extra_datasets.items()
                 if root is None or _paths_exist(overrides, root)})
    tail = ["defense=none", *study.survey.attack, _seeds(study.survey)]
    return [Sweep(name, (*overrides, *tail), skip_missing=True) for name, overrides in jobs.items()]


def _seeds(size) -> str:
    return "seed=" + ",".join(map(str, size.seeds))


def _paths_exist(overrides, root: Path) -> bool:
    paths = [o.split("=", 1)[1] for o in overrides if o.startswith("path=")]
    return all((root / p).exists() for p in paths)
