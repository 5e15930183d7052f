"""defense=soteria: the representation layer's gradient pruned by the features' scores."""
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from gradleak import project_root
from gradleak.checks import ConfigError
from gradleak.engine.attack import Attack
from gradleak.engine.objective import gradient_distance
from gradleak.jobs.preflight import preflight
from gradleak.victim.defenses import defense_from_config
from gradleak.victim.defenses.soteria import feature_mask, feature_scores, representation
from gradleak.victim.gradients import shared_gradients
from gradleak.victim.models import build_model

CONF = project_root() / "conf"


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def victim(targets=2, batch=3, size=12):
    torch.manual_seed(0)
    model = build_model("lenet", 1, size, 10).double()
    gen = torch.Generator().manual_seed(1)
    images = torch.rand((targets, batch, 1, size, size), generator=gen, dtype=torch.float64) - 0.5
    return model, images, torch.randint(0, 10, (targets, batch), generator=gen)


@pytest.mark.fast
def test_scores_are_the_papers_ratio_summed_over_the_images():
    model, images, _ = victim()
    scores = feature_scores(model, images[0])
    for f in (0, 17, len(scores) - 1):
        expected = 0.0
        for x in images[0]:
            x = x.clone().requires_grad_()
            r = representation(model, x)
            (dx,) = torch.autograd.grad(r[f], x)
            expected += float(dx.norm() / r[f])
        assert float(scores[f]) == pytest.approx(expected, rel=1e-10)


@pytest.mark.fast
def test_the_mask_cuts_at_numpys_percentile_of_the_absolute_scores():
    scores = torch.tensor([0.5, -3.0, 2.0, -0.1, 4.0, 1.0], dtype=torch.float64)
    assert np.percentile(np.abs(scores.numpy()), 40) == 1.0  # the cut; a score equal to it is kept
    assert feature_mask(scores, 40).tolist() == [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    assert feature_mask(scores, 50).tolist() == [0.0, 1.0, 1.0, 0.0, 1.0, 0.0]  # cut 1.5, interpolated
    assert feature_mask(scores, 0).tolist() == [1.0] * 6


@pytest.mark.fast
def test_only_the_last_linear_weight_loses_the_low_scoring_columns_per_gradient():
    model, images, labels = victim()
    grads = shared_gradients(model, images, labels)
    defended = defense_from_config(config("defense=soteria", "percent=40").defense)(grads, batch_dims=1,
                                                                                       data=(model, images))
    fc = [i for i, (name, _) in enumerate(model.named_parameters()) if name == "fc.weight"][0]
    for i, (g, d) in enumerate(zip(grads, defended)):
        if i != fc:
            assert torch.equal(g, d)
    for t in range(2):
        mask = feature_mask(feature_scores(model, images[t]), 40)
        assert torch.equal(defended[fc][t], grads[fc][t] * mask)
        assert int((mask == 0).sum()) == round(0.4 * (len(mask) - 1))  # interpolated cut: 40% of the gaps
    with pytest.raises(ValueError, match="needs the images and model"):
        defense_from_config(config("defense=soteria").defense)(grads, batch_dims=1)


@pytest.mark.fast
def test_the_adaptive_match_is_zero_at_the_true_image_and_not_without_the_mask():
    model, images, labels = victim(targets=1, batch=1)
    cfg = config("attack=adaptive", "defense=soteria", "percent=60", "attack.num_targets=1", "attack.steps=1")
    attack = Attack(cfg.attack, model, images, labels, defense_from_config(cfg.defense), 0, torch.device("cpu"))
    true = shared_gradients(model, images, labels)
    adapted = attack.adaptive.transform([g[0] for g in true], [t[0] for t in attack.targets])
    assert float(gradient_distance([a[None] for a in adapted], attack.targets, "l2")) == 0.0
    assert float(gradient_distance(true, attack.targets, "l2")) > 0  # the plain match sees the zeroed columns


@pytest.mark.parametrize("argv,message", [
    (["defense=soteria", "percent=100"], "percent=100.0: allowed range is 0 <= percent < 100"),
    (["task=text", "defense=soteria"], "defense=soteria: scores an image model's representation"),
])
@pytest.mark.fast
def test_bad_soteria_input_is_one_line(argv, message):
    with pytest.raises(ConfigError) as err:
        preflight(argv, CONF)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_training_under_soteria_runs_through_the_clients(run_py):
    res = run_py("defense=soteria", "percent=40", "train=smoke", "train.max_train_images=256",
                 "train.max_test_images=100", "train.epochs=1", "attack.num_targets=1", "attack.steps=2")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "defense=soteria percent=40 (40% of features)" in res.stdout
    assert "training (smoke): test accuracy" in res.stdout
