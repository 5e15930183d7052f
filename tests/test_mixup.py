"""defense=mixup and defense=instahide: the client's images encoded before its gradient, and
GradAttack's attack through them (gradient inversion, then the decode)."""
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from gradleak import project_root
from gradleak.checks import ConfigError
from gradleak.engine.attack import Attack, run_attack
from gradleak.jobs.preflight import preflight
from gradleak.victim.clients import client_updates
from gradleak.victim.defenses import defense_from_config
from gradleak.victim.defenses.mixup import decode_instahide, decode_mixup, draw_mixing, encode
from gradleak.victim.gradients import shared_gradients, soft_cross_entropy
from gradleak.victim.models import build_model

CONF = project_root() / "conf"


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def pool(n=6, size=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((n, 1, size, size), generator=gen, dtype=torch.float64),
            torch.randint(0, 10, (n,), generator=gen))


@pytest.mark.fast
def test_each_encoding_mixes_its_own_image_first_and_k_minus_1_others_within_the_bounds():
    coefficients, sources = draw_mixing(12, 4, 0.05, 0.65, torch.Generator().manual_seed(0))
    assert coefficients.shape == sources.shape == (12, 4)
    assert coefficients.sum(1) == pytest.approx([1.0] * 12)
    assert coefficients.min() >= 0.05 and coefficients.max() <= 0.65
    assert sources[:, 0].tolist() == list(range(12))
    assert all(len(set(row)) == 4 for row in sources.tolist())
    again, _ = draw_mixing(12, 4, 0.05, 0.65, torch.Generator().manual_seed(0))
    assert (again == coefficients).all()  # seeded by the client's generator


@pytest.mark.fast
def test_two_images_mixed_by_hand():
    images = torch.stack([torch.zeros(1, 2, 2), torch.ones(1, 2, 2)]).double()
    enc = encode(images, torch.tensor([0, 1]), 3, k=2, lower=0.0, upper=0.9, flip=False,
                 generator=torch.Generator().manual_seed(3))
    (a0, a1), (b0, b1) = enc.coefficients.tolist()  # row j: its own image's share first
    assert enc.sources.tolist() == [[0, 1], [1, 0]]
    assert enc.images[0].flatten().tolist() == pytest.approx([a1] * 4)  # a0 * 0 + a1 * 1
    assert enc.images[1].flatten().tolist() == pytest.approx([b0] * 4)
    assert enc.soft_labels.flatten().tolist() == pytest.approx([a0, a1, 0.0, b1, b0, 0.0])
    assert enc.mixing_matrix().flatten().tolist() == pytest.approx([a0, a1, b1, b0])


@pytest.mark.fast
def test_instahide_flips_half_of_the_pixels_of_mixups_mix_about_the_pools_mean():
    images, labels = pool(n=8, size=16)
    images = images ** 3  # a mean pixel well below the middle of the range, as digits have
    mix = encode(images, labels, 10, k=4, lower=0.0, upper=0.65, flip=False, generator=torch.Generator().manual_seed(5))
    hide = encode(images, labels, 10, k=4, lower=0.0, upper=0.65, flip=True, generator=torch.Generator().manual_seed(5))
    centre = float(images.mean())
    assert hide.centre.flatten().tolist() == pytest.approx([centre]) and centre < 0.3
    kept = torch.isclose(hide.images, mix.images)
    flipped = torch.isclose(hide.images, 2 * centre - mix.images)
    assert bool((kept | flipped).all())
    assert 0.45 < float((flipped & ~kept).double().mean()) < 0.55
    assert torch.equal(hide.soft_labels, mix.soft_labels)


@pytest.mark.fast
def test_mixups_decode_recovers_the_pool_from_its_encodings():
    images, labels = pool()
    enc = encode(images, labels, 10, k=3, lower=0.0, upper=0.65, flip=False, generator=torch.Generator().manual_seed(2))
    assert float((enc.images - images).abs().max()) > 0.1  # the encodings are not the images
    assert float((decode_mixup(enc.images, enc) - images).abs().max()) < 1e-9


@pytest.mark.fast
def test_instahides_decode_explains_the_magnitudes_it_was_given():
    images, labels = pool(n=8)
    images = (images > 0.7).double()  # black and white, as digits
    enc = encode(images, labels, 10, k=4, lower=0.0, upper=0.65, flip=True, generator=torch.Generator().manual_seed(2))
    decoded = decode_instahide(enc.images, enc)
    assert decoded.shape == images.shape and 0 <= float(decoded.min()) and float(decoded.max()) <= 1
    centre = float(images.mean())
    magnitude = (enc.images - centre).abs().flatten(1)

    def unexplained(pool_images):
        return float(((enc.mixing_matrix() @ (pool_images.flatten(1) - centre)).abs() - magnitude).pow(2).mean())
    assert unexplained(decoded) < 0.1 * unexplained(torch.full_like(images, 0.5))
    assert unexplained(images) < 1e-20  # the true pool explains them exactly


@pytest.mark.fast
def test_a_workers_update_is_the_gradient_of_its_encoded_shard():
    torch.manual_seed(0)
    model = build_model("lenet", 1, 8, 10).double()
    images, labels = pool(n=8)
    shards, shard_labels = images.reshape(2, 4, 1, 8, 8), labels.reshape(2, 4)
    defense = defense_from_config(config("defense=mixup", "k=3").defense)
    defended, _ = client_updates(model, shards, shard_labels, defense, step=7, seed=11, vectorize=False)
    from gradleak.victim.clients import worker_seed
    for w in range(2):
        enc = encode(shards[w], shard_labels[w], 10, k=3, lower=0.0, upper=0.65, flip=False,
                     generator=torch.Generator().manual_seed(worker_seed(11, 7, w)))
        loss = soft_cross_entropy(model(enc.images), enc.soft_labels)
        expected = torch.autograd.grad(loss, list(model.parameters()))
        for got, want in zip(defended[w], expected):
            assert torch.allclose(got, want, atol=1e-12)


@pytest.mark.fast
def test_the_attacked_update_is_the_gradient_of_the_encoding_with_its_mixed_labels():
    torch.manual_seed(0)
    model = build_model("lenet", 1, 8, 10).double()
    images, labels = pool(n=4)
    cfg = config("defense=instahide", "attack.num_targets=4", "attack.steps=1")
    attack = Attack(cfg.attack, model, images[:, None], labels[:, None], defense_from_config(cfg.defense), 0,
                    torch.device("cpu"))
    enc = attack.encoding
    expected = shared_gradients(model, enc.images[:, None], enc.soft_labels[:, None])
    for got, want in zip(attack.targets, expected):
        assert torch.allclose(got, want, atol=1e-12)
    plain = shared_gradients(model, images[:, None], labels[:, None])
    assert not torch.allclose(attack.targets[0], plain[0])


def test_the_adaptive_attack_decodes_mixup_and_the_plain_one_finds_the_encodings():
    torch.manual_seed(0)
    model = build_model("lenet", 1, 8, 10).double()
    images, labels = pool(n=4, seed=4)
    outcomes = {}
    for attacker in ("dlg", "adaptive"):
        cfg = config(f"attack={attacker}", "defense=mixup", "k=2", "attack.num_targets=4", "attack.labels=soft",
                     "attack.steps=60")
        outcomes[attacker] = run_attack(cfg.attack, model, images[:, None], labels[:, None],
                                        defense_from_config(cfg.defense), 0, "cpu", progress_bar=False)
    enc = encode(images, labels, 10, k=2, lower=0.0, upper=0.65, flip=False,
                 generator=torch.Generator().manual_seed(1))  # the attack's noise stream: seed + 1
    plain = outcomes["dlg"].reconstructions[:, 0]
    assert F.mse_loss(plain, enc.images) < 1e-4 < F.mse_loss(plain, images)  # the encodings, not the images
    assert sum(t["success"] for t in outcomes["adaptive"].targets) == 4
    assert sum(t["success"] for t in outcomes["dlg"].targets) == 0


@pytest.mark.parametrize("argv,message", [
    (["defense=mixup", "k=1"], "k=1: allowed range is 2 <= k"),
    (["defense=instahide", "upper=0.2"], "upper=0.2: allowed range is 0.25 < upper <= 1"),
    (["defense=mixup", "attack.num_targets=2"], "defense=mixup k=4: the client's pool is attack.num_targets x"),
    (["defense=mixup", "attack=adaptive", "attack.batch_size=4"], "attack.batch_size=4: allowed 1 with"),
    (["defense=mixup", "aggregation=secure", "attack.batch_size=4"], "each client holds one image there"),
    (["task=text", "defense=instahide"], "defense=instahide: mixes images; not built for task=text"),
])
@pytest.mark.fast
def test_bad_mixing_input_is_one_line(argv, message):
    with pytest.raises(ConfigError) as err:
        preflight(argv, CONF)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_training_under_instahide_runs_through_the_clients(run_py):
    res = run_py("defense=instahide", "train=smoke", "train.max_train_images=256", "train.max_test_images=100",
                 "train.epochs=1", "attack.num_targets=4", "attack.steps=2", "attack.labels=soft")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "defense=instahide k=4 lower=0.0 upper=0.65 (k = 4)" in res.stdout
    assert "training (smoke): test accuracy" in res.stdout
