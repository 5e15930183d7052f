"""Config composition (Hydra compose API) and the bad-input guard of run.py."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from gradleak.checks import ConfigError
from gradleak.jobs.config import validate
from gradleak.jobs.preflight import preflight
from gradleak.victim.data import DatasetError

CONF = Path(__file__).resolve().parents[1] / "conf"


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    validate(cfg)
    return cfg


def test_defaults_attack_digits_undefended():
    cfg = composed()
    assert (cfg.dataset.name, cfg.model.name, cfg.defense.name, cfg.train.name) == ("digits", "lenet", "none", "none")
    a = cfg.attack
    assert (a.optimizer, a.lr, a.history_size, a.max_iter, a.steps, a.num_targets) == ("lbfgs", 1.0, 100, 20, 300, 8)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "attack").glob("*.yaml")))
def test_every_attacker_sets_every_schema_key(name):
    a = composed(f"attack={name}", "defense=prune", "attack.adaptive=true").attack  # MISSING would fail
    assert a.name == {"adaptive": "dlg"}.get(name, name) and a.adaptive is True


def test_attack_adaptive_is_dlg_through_the_defense():
    assert composed("attack=adaptive").attack == composed("attack=dlg", "attack.adaptive=true").attack


def test_adaptive_attack_on_a_defense_without_adaptive_form_is_one_line(monkeypatch):
    import dataclasses

    from gradleak.jobs import config

    formless = dataclasses.replace(config.DEFENSES["prune"], adaptive=lambda knobs: None)
    monkeypatch.setitem(config.DEFENSES, "prune", formless)
    composed("defense=prune", "attack.adaptive=false")
    with pytest.raises(ConfigError, match="^attack.adaptive=true: defense=prune has no adaptive form$"):
        composed("defense=prune", "attack.adaptive=true")


def test_ig_defaults_are_the_published_ones():
    a = composed("attack=ig").attack
    assert (a.optimizer, a.match, a.lr, a.tv, a.labels, a.restarts) == ("signed_adam", "cosine", 0.1, 1e-4, "auto", 1)
    assert a.steps * a.max_iter == 4800  # Adam updates, the code's max_iterations


@pytest.mark.parametrize("overrides,expected", [
    (["defense=noise", "scale=1e-2"], {"name": "noise", "noise": "gaussian", "scale": 1e-2}),
    (["defense=noise", "noise=laplacian", "scale=0.1"], {"name": "noise", "noise": "laplacian", "scale": 0.1}),
    (["defense=prune", "ratio=0.7"], {"name": "prune", "ratio": 0.7}),
    (["defense=precision", "precision=int8"], {"name": "precision", "precision": "int8"}),
    (["defense=precision", "precision=bf16"], {"name": "precision", "precision": "bf16"}),
])
def test_defense_knobs(overrides, expected):
    assert dict(composed(*overrides).defense) == expected


@pytest.mark.parametrize("name", ["digits", "mnist", "fashionmnist", "cifar10", "cifar100", "svhn", "lfw"])
def test_dataset_options(name):
    assert composed(f"dataset={name}").dataset.name == name


def test_user_dataset_knob_path():
    cfg = composed("dataset=npz", "path=/some/file.npz")
    assert cfg.dataset.path == "/some/file.npz"


def study_sweeps(profile: str):
    """(stage, run.py -m overrides) of every sweep of conf/study/<profile>.yaml, as
    scripts/sweep.py runs them (the datasets stage aside), on the bundled digits."""
    with initialize_config_dir(config_dir=str(CONF / "study"), version_base="1.3"):
        study = compose(config_name=profile)
    for stage, grids in study.stages.items():
        size = study.survey if stage == "batch" else study
        sizes = [*size.attack, *([] if stage == "batch" else study.train), "dataset=digits",
                 "seed=" + ",".join(map(str, size.seeds))]
        if stage == "rounds":
            sizes += ["attack.round=" + ",".join(map(str, study.rounds.at)),
                      f"attack.num_targets={study.rounds.clients}"]
        for grid in grids.values() if isinstance(grids, DictConfig) else [grids]:
            yield stage, ["-m", *grid, *sizes]


def test_every_study_job_is_valid_and_every_defense_meets_three_attackers():
    jobs, attackers = {}, {}
    for stage, argv in study_sweeps("smoke"):  # the paper profile differs in sizes only
        jobs[stage] = jobs.get(stage, 0) + preflight(argv, CONF)
        attackers.setdefault(stage, set()).update(*(o[len("attack="):].split(",") for o in argv
                                                    if o.startswith("attack=")))
    per_seed = {"undefended": 2, "noise": 4 * 2 + 4 * 3, "prune": 6 * 3, "precision": 3 * 3, "dpsgd": 3 * 3,
                "rounds": 3 * 3}
    assert jobs == {**{k: 3 * v for k, v in per_seed.items()}, "batch": 4}
    assert attackers == {"undefended": {"dlg", "ig"}, "noise": {"dlg", "ig", "adaptive"},
                         "prune": {"dlg", "ig", "adaptive"}, "precision": {"dlg", "ig", "adaptive"},
                         "dpsgd": {"dlg", "ig", "adaptive"}, "batch": set(), "rounds": {"dlg", "adaptive"}}


def test_exact_sweep_syntax_expands_to_three_jobs():
    n = preflight(["-m", "defense=noise", "scale=1e-4,1e-3,1e-2"], CONF)
    assert n == 3
    assert preflight(["-m", "defense=noise", "noise=gaussian,laplacian", "scale=1e-4,1e-1"], CONF) == 4


@pytest.mark.parametrize("argv,message", [
    (["defense=noise", "scale=-1"], "scale=-1.0: allowed range is 0 <= scale"),
    (["defense=noise", "scale=abc"], "scale=abc: allowed values of type float"),
    (["defense=prune", "ratio=1.5"], "ratio=1.5: allowed range is 0 <= ratio < 1"),
    (["defense=precision", "precision=int3"], "precision=int3: allowed values are fp16, bf16, int8"),
    (["defense=noise", "noise=cauchy"], "noise=cauchy: allowed values are gaussian, laplacian"),
    (["dataset=imagenet"], "dataset=imagenet: unknown option; allowed dataset=cifar10|cifar100|digits|"),
    (["defense=none", "scale=1e-3"],
     "scale=1e-3: 'scale' exists only with defense=noise, but defense=none is selected"),
    (["-m", "defense=noise,none", "scale=1e-3"], "'scale' exists only with defense=noise, but defense=none"),
    (["defense=prune", "scale=1e-3"], "'scale' exists only with defense=noise, but defense=prune"),
    (["path=x.npz"], "'path' exists only with dataset=imagefolder or dataset=npz"),
    (["attack.steps=-5"], "attack.steps=-5: allowed range is 0 <= attack.steps"),
    (["attack.labels=idlg", "attack.batch_size=2"], "attack.labels=idlg: allowed with attack.batch_size=1 only"),
    (["attack.num_targets=5000"], "attack.num_targets=5000: dataset=digits has 360 test images"),
    (["attack.stepz=3"], "attack.stepz=3: unknown key 'attack.stepz'"),
    (["attack.match=l3"], "attack.match=l3: allowed values are l2, l1, cosine"),
    (["attack=ig", "attack.tv=-1"], "attack.tv=-1.0: allowed range is 0 <= attack.tv"),
    (["defense=noise", "scale=1e-4,1e-3"], "a list of values is a sweep; add -m"),
])
def test_bad_input_is_one_clear_line(argv, message):
    with pytest.raises(ConfigError) as err:
        preflight(argv, CONF)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_dataset_names_folder_and_files(tmp_path):
    with pytest.raises(DatasetError) as err:
        preflight(["dataset=mnist", f"data_dir={tmp_path}"], CONF)
    text = str(err.value)
    assert f"files not found in {tmp_path}" in text and f"{tmp_path}/MNIST/raw/" in text
    assert "dataset=digits" in text and "\n" not in text
