"""Config composition (Hydra compose API) and the bad-input guard of run.py."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gradleak.checks import ConfigError
from gradleak.jobs.config import validate
from gradleak.jobs.preflight import preflight
from gradleak.jobs.study import experiment_grid, load_study, stage_sweeps
from gradleak.text.schema import validate_text
from gradleak.victim.data import DatasetError, load_split
from gradleak.victim.training import training_steps

CONF = Path(__file__).resolve().parents[1] / "conf"
MNIST_TRAIN_IMAGES = 60_000


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    validate_text(cfg) if cfg.get("task") == "text" else validate(cfg)
    return cfg


@pytest.mark.fast
def test_defaults_attack_digits_undefended():
    cfg = composed()
    assert (cfg.dataset.name, cfg.model.name, cfg.defense.name, cfg.train.name) == ("digits", "lenet", "none", "none")
    a = cfg.attack
    assert (a.optimizer, a.lr, a.history_size, a.max_iter, a.steps, a.num_targets) == ("lbfgs", 1.0, 100, 20, 300, 8)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "attack").glob("*.yaml")))
@pytest.mark.fast
def test_every_attacker_sets_every_schema_key(name):
    text = ["task=text"] if name.startswith("text") else []  # the text attackers' schema is task=text's
    a = composed(*text, f"attack={name}", "defense=prune", "attack.adaptive=true").attack  # MISSING would fail
    assert a.name == {"adaptive": "dlg"}.get(name, name) and a.adaptive is True


@pytest.mark.fast
def test_attack_adaptive_is_dlg_through_the_defense():
    assert composed("attack=adaptive").attack == composed("attack=dlg", "attack.adaptive=true").attack


@pytest.mark.fast
def test_adaptive_attack_on_a_defense_without_adaptive_form_is_one_line(monkeypatch):
    import dataclasses

    from gradleak.jobs import config

    formless = dataclasses.replace(config.DEFENSES["prune"], adaptive=lambda knobs: None)
    monkeypatch.setitem(config.DEFENSES, "prune", formless)
    composed("defense=prune", "attack.adaptive=false")
    with pytest.raises(ConfigError, match="^attack.adaptive=true: defense=prune has no adaptive form$"):
        composed("defense=prune", "attack.adaptive=true")


@pytest.mark.fast
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
@pytest.mark.fast
def test_defense_knobs(overrides, expected):
    assert dict(composed(*overrides).defense) == expected


@pytest.mark.parametrize("name", ["digits", "mnist", "fashionmnist", "cifar10", "cifar100", "svhn", "lfw"])
@pytest.mark.fast
def test_dataset_options(name):
    assert composed(f"dataset={name}").dataset.name == name


@pytest.mark.fast
def test_user_dataset_knob_path():
    cfg = composed("dataset=npz", "path=/some/file.npz")
    assert cfg.dataset.path == "/some/file.npz"


def study_sweeps(profile: str):
    """(stage, run.py -m overrides) of every sweep of conf/study/<profile>.yaml, as
    scripts/sweep.py runs them (the datasets stage aside), on the bundled digits."""
    with initialize_config_dir(config_dir=str(CONF / "study"), version_base="1.3"):
        study = compose(config_name=profile)
    for stage, grids in study.stages.items():
        if stage == "text":  # the bundled corpus: as the study runs it
            yield from ((stage, ["-m", *sweep.overrides]) for sweep in stage_sweeps(study, stage))
            continue
        size = study.survey if stage == "batch" else study
        seeds = (study.secure if stage == "secure" else size).seeds
        sizes = [*size.attack, *([] if stage == "batch" else study.train), "dataset=digits",
                 "seed=" + ",".join(map(str, seeds))]
        if stage == "rounds":  # the profile's rounds are steps of its dataset's run (the next test)
            sizes += ["attack.round=" + ",".join(map(str, digits_rounds(study))),
                      f"attack.num_targets={study.rounds.clients}"]
        for name in grids:
            yield stage, ["-m", *experiment_grid(name), *sizes]


def digits_rounds(study) -> list[int]:
    """Where the profile's rounds are in its training (first step, one epoch in, last step),
    in the same training on the bundled digits: a shorter run (preflight checks the round)."""
    cfg = composed(*study.train, "dataset=digits")
    steps = training_steps(cfg, len(load_split(cfg.dataset, "train")))
    return [0, steps // cfg.train.epochs, steps - 1]


@pytest.mark.fast
def test_the_study_rounds_are_steps_of_its_training_run():
    with initialize_config_dir(config_dir=str(CONF / "study"), version_base="1.3"):
        study = compose(config_name="smoke")
    assert study.dataset == "mnist"
    cfg = composed(*study.train, f"dataset={study.dataset}")
    steps = training_steps(cfg, MNIST_TRAIN_IMAGES)
    assert list(study.rounds.at) == [0, steps // cfg.train.epochs, steps - 1] == [0, 312, 3119]


def test_every_study_job_is_valid_and_every_defense_meets_three_attackers():
    jobs, attackers = {}, {}
    for stage, argv in study_sweeps("smoke"):  # the paper profile differs in sizes only
        jobs[stage] = jobs.get(stage, 0) + preflight(argv, CONF)
        attackers.setdefault(stage, set()).update(*(o[len("attack="):].split(",") for o in argv
                                                    if o.startswith("attack=")))
    per_seed = {"undefended": 2, "noise": 4 * 2 + 4 * 3, "prune": 6 * 3, "precision": 3 * 3, "dpsgd": 3 * 3,
                "rounds": 3 * 3, "text": 3 + 4 + 4 * 2 + 3 + 3, "later": 2 + 3 * 2 + 3 * 2 + 3}
    assert jobs == {**{k: 3 * v for k, v in per_seed.items()}, "batch": 4,
                    "secure": 2 * 2 * 5}  # 2 sweeps x 2 attackers x N = 1..16, one seed
    assert attackers == {"undefended": {"dlg", "ig"}, "noise": {"dlg", "ig", "adaptive"},
                         "prune": {"dlg", "ig", "adaptive"}, "precision": {"dlg", "ig", "adaptive"},
                         "dpsgd": {"dlg", "ig", "adaptive"}, "batch": set(), "rounds": {"dlg", "adaptive"},
                         "text": {"text", "text_cosine", "text_tag"},  # each match undefended
                         "later": {"dlg", "ig", "adaptive"},
                         "secure": {"dlg", "ig"}}  # the mean's Gaussian noise is DLG's L2 likelihood


@pytest.mark.fast
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
    (["dataset=imagenet"], "dataset=imagenet: unknown option; allowed dataset=bible|cifar10|cifar100|digits|"),
    (["dataset=bible"], "dataset=bible: a text dataset; add task=text"),
    (["model=textlm"], "model=textlm: a text victim; add task=text"),
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
@pytest.mark.fast
def test_bad_input_is_one_clear_line(argv, message):
    with pytest.raises(ConfigError) as err:
        preflight(argv, CONF)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("train,steps", [
    (["train=smoke"], 220),  # 10 epochs x 22 whole batches of 64 of digits' 1,437 train images
    (["train=smoke", "train.epochs=2", "train.batch_size=128"], 22),  # 2 x 11
    (["train=smoke", "train.max_train_images=640"], 100),  # the split cut first: 10 x 10
])
@pytest.mark.fast
def test_attack_round_beyond_the_training_run_is_one_line_before_any_work(train, steps):
    assert training_steps(composed(*train), 1437) == steps
    assert preflight([*train, f"attack.round={steps - 1}"], CONF) == 1  # the last step
    for bad in (steps, 999999):
        with pytest.raises(ConfigError) as err:
            preflight([*train, f"attack.round={bad}"], CONF)
        assert str(err.value) == (f"attack.round={bad}: train=smoke on dataset=digits has {steps} training steps;"
                                  f" allowed attack.round=0..{steps - 1}")
    with pytest.raises(ConfigError, match=f"^attack.round={steps}: "):  # in a sweep, the job that is wrong
        preflight(["-m", *train, f"attack.round=0,{steps - 1},{steps}"], CONF)


@pytest.mark.fast
def test_missing_dataset_names_folder_and_files(tmp_path):
    with pytest.raises(DatasetError) as err:
        preflight(["dataset=mnist", f"data_dir={tmp_path}"], CONF)
    text = str(err.value)
    assert f"files not found in {tmp_path}" in text and f"{tmp_path}/MNIST/raw/" in text
    assert "dataset=digits" in text and "\n" not in text


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_an_experiment_run_with_plain_hydra_is_its_study_sweep(name):
    """`python run.py -m +experiment=<name>` (the grid in hydra.sweeper.params, expanded as
    the basic sweeper does) runs exactly the jobs of its sweep in the smoke study."""
    from gradleak.gate.fingerprint import job_identity
    from gradleak.jobs.hydra_cli import expand_sweep, parse_overrides, sweeper_params

    study = load_study("smoke")
    stage = next(s for s, names in study.stages.items() if name in names)
    (sweep,) = [s for s in stage_sweeps(study, stage) if s.folder == name.removeprefix(stage).removeprefix("_")]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        grid = sweeper_params(compose("config", [f"+experiment={name}"], return_hydra_config=True))
        plain = {job_identity(compose("config", [*job, f"+experiment={name}", "data_dir=data"]))
                 for job in expand_sweep(parse_overrides(grid))}
        studied = {job_identity(compose("config", [*job, "data_dir=data"]))
                   for job in expand_sweep(parse_overrides(list(sweep.overrides)))}
    assert plain == studied and len(plain) == {"batch": 4, "undefended": 6, "noise_gaussian": 24,
                                               "noise_laplacian": 36, "prune": 54, "precision": 27,
                                               "dpsgd": 27, "text_undefended": 9, "text_noise": 12,
                                               "text_prune": 24, "later_soteria": 18,
                                               "later_mixing": 18, "secure_undefended": 10,
                                               "secure_noise": 10}.get(name, 9)


@pytest.mark.fast
def test_where_and_how_a_job_runs_is_not_what_it_is():
    from gradleak.job_keys import defines_job

    where = ["data_dir=/d", "+tracking.uri=sqlite:///x.db", "threads=2", "resume=true", "hydra/launcher=joblib",
             "hydra.sweep.dir=/s"]
    what = ["seed=1", "attack=ig", "attack.steps=5", "dataset=mnist", "train.keep_rounds=[0]", "+experiment=batch"]
    assert [defines_job(o) for o in where + what] == [False] * len(where) + [True] * len(what)


@pytest.mark.fast
def test_preflight_counts_an_experiments_jobs():
    """The experiment's grid (hydra.sweeper.params) is part of the sweep preflight checks
    (attack.batch_size=1,2,4,8: 4 jobs); the command line's dataset comes after it and wins."""
    assert preflight(["-m", "+experiment=batch", "dataset=digits"], CONF) == 4
