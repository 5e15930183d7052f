"""aggregation=secure: the attacked update is the mean of N clients' own defended updates."""
import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from gradleak import project_root
from gradleak.checks import ConfigError
from gradleak.jobs.preflight import preflight
from gradleak.victim.aggregation import SecureAggregation, attacked_defense
from gradleak.victim.defenses import defense_from_config
from gradleak.victim.gradients import per_sample_gradients, shared_gradients
from gradleak.victim.models import build_model

CONF = project_root() / "conf"


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def clients(n=4, targets=2):
    """A LeNet at its seeded init and targets x n images (each image one client's)."""
    torch.manual_seed(0)
    model = build_model("lenet", 1, 8, 10).double()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand((targets, n, 1, 8, 8), generator=gen, dtype=torch.float64) - 0.5
    labels = torch.randint(0, 10, (targets, n), generator=gen)
    return model, images, labels


@pytest.mark.fast
def test_undefended_secure_aggregation_is_the_batch_gradient():
    model, images, labels = clients()
    per_image, _ = per_sample_gradients(model, images, labels)
    aggregated = attacked_defense(config("aggregation=secure", "attack.batch_size=4"))(per_image, batch_dims=1)
    for a, b in zip(aggregated, shared_gradients(model, images, labels)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("defense", [["defense=prune", "ratio=0.5"], ["defense=precision", "precision=int8"],
                                     ["defense=dpsgd", "clip=0.05", "noise_multiplier=0"]])
@pytest.mark.fast
def test_the_update_is_the_mean_of_the_clients_updates_defended_one_by_one(defense):
    model, images, labels = clients()
    cfg = config(*defense, "aggregation=secure", "attack.batch_size=4")
    plain = defense_from_config(cfg.defense)
    per_image, _ = per_sample_gradients(model, images, labels)
    aggregated = attacked_defense(cfg)(per_image, batch_dims=1)
    for t in range(2):
        one_by_one = []
        for n in range(4):
            g = shared_gradients(model, images[t, n][None, None], labels[t, n][None, None])
            if plain.per_sample:
                g = [x[:, None] for x in g]  # the client's batch is its one image
            one_by_one.append(plain(g, batch_dims=1))
        for a, *each in zip(aggregated, *one_by_one):
            expected = torch.stack([e[0] for e in each]).mean(0)
            torch.testing.assert_close(a[t], expected, rtol=1e-9, atol=1e-12)
    if defense[0] == "defense=prune":  # per client, not on the mean: the mean keeps more entries
        kept = sum(int((a != 0).sum()) for a in aggregated)
        pruned_mean = plain(shared_gradients(model, images, labels), batch_dims=1)
        assert kept > 1.1 * sum(int((a != 0).sum()) for a in pruned_mean)


@pytest.mark.fast
def test_each_clients_noise_reaches_the_server_divided_by_n():
    cfg = config("defense=noise", "scale=1.0", "aggregation=secure", "attack.batch_size=16")
    zeros = [torch.zeros((1, 16, 4000), dtype=torch.float64)]
    (mean,) = attacked_defense(cfg)(zeros, generator=torch.Generator().manual_seed(0), batch_dims=1)
    assert 0.23 < float(mean.std()) < 0.27  # 1 / sqrt(16) = 0.25; 4,000 draws


@pytest.mark.fast
def test_one_client_is_the_defense_itself():
    model, images, labels = clients(n=1)
    cfg = config("defense=precision", "precision=int8", "aggregation=secure")
    per_image, _ = per_sample_gradients(model, images, labels)
    alone = defense_from_config(cfg.defense)(shared_gradients(model, images, labels), batch_dims=1)
    for a, b in zip(SecureAggregation(defense_from_config(cfg.defense))(per_image, batch_dims=1), alone):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("argv,message", [
    (["aggregation=secure", "attack.batch_size=4", "defense=prune", "ratio=0.3", "attack.adaptive=true"],
     "attack.adaptive=true: no adaptive form is built with aggregation=secure"),
    (["aggregation=secure", "attack.batch_size=4", "model=resnet20"], "model=resnet20: its BatchNorm"),
    (["aggregation=secure", "attack.batch_size=4", "train=smoke", "train.local_steps=2"],
     "train.local_steps=2: allowed 1 with aggregation=secure"),
    (["aggregation=secure", "train=smoke", "attack.round=0"], "attack.round=0: secure aggregation is attacked"),
    (["aggregation=secure", "task=text"], "aggregation=secure: task=text attacks one sentence's update"),
    (["aggregation=sum"], "aggregation=sum"),
])
@pytest.mark.fast
def test_what_secure_aggregation_cannot_do_is_one_line(argv, message):
    with pytest.raises(ConfigError) as err:
        preflight(argv, CONF)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_secure_aggregation_job_says_what_was_attacked(run_py):
    res = run_py("aggregation=secure", "attack.batch_size=2", "attack.num_targets=2", "attack.steps=3",
                 "defense=noise", "scale=0.01", "attack.distractors=20")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "2 targets x 2 images (secure aggregation: the mean of 2 clients' defended updates)" in res.stdout
    m = json.loads((run_py.dir / "run" / "metrics.json").read_text())
    assert m["config"]["aggregation.name"] == "secure" and len(m["targets"]) == 2
    # its own family in tables and figures, strength N, the mean's noise variance
    assert {k: m["defense"][k] for k in ("family", "strength", "strength_label", "variance")} == {
        "family": "secure-noise-gaussian", "strength": 2, "strength_label": "N = 2, var 1e-04 (σ=0.01)",
        "variance": pytest.approx(0.01 ** 2 / 2)}
    assert m["config"]["defense.variance"] == pytest.approx(0.01 ** 2 / 2)
