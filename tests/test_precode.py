"""defense=precode: the variational bottleneck built into the victim, the client's own noise draw
in its update, and the adaptive attack that solves for that draw."""
import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from gradleak import project_root
from gradleak.checks import ConfigError
from gradleak.engine.attack import Attack, run_attack
from gradleak.engine.objective import GradientMatch
from gradleak.jobs.preflight import preflight
from gradleak.victim.clients import client_updates, worker_seed
from gradleak.victim.defenses import defense_from_config
from gradleak.victim.defenses.precode import Precode, VariationalBottleneck
from gradleak.victim.gradients import last_linear_weight, shared_gradients, soft_cross_entropy
from gradleak.victim.models import build_model

CONF = project_root() / "conf"


def config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def victim(latent=16, beta=1e-3, size=8, seed=0):
    torch.manual_seed(seed)
    return Precode(build_model("lenet", 1, size, 10), latent, beta).double()


def digits(n=2, size=8, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand((n, 1, size, size), generator=gen, dtype=torch.float64),
            torch.randint(0, 10, (n,), generator=gen))


@pytest.mark.fast
def test_the_bottleneck_by_hand():
    vb = VariationalBottleneck(features=2, latent=1, beta=0.5).double()
    with torch.no_grad():
        vb.encoder.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # mu = r_0, pre-sigma = r_1
        vb.encoder.bias.zero_()
        vb.decoder.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        vb.decoder.bias.copy_(torch.tensor([0.5, 0.0]))
    decoded, penalty = vb(torch.tensor([[0.3, -0.2]], dtype=torch.float64), torch.tensor([[1.5]], dtype=torch.float64))
    sigma = math.log1p(math.exp(-0.2))
    z = 0.3 + sigma * 1.5
    assert decoded.flatten().tolist() == pytest.approx([2 * z + 0.5, -z])
    kl_bits = 0.5 * (0.3 ** 2 + sigma ** 2 - 1 - 2 * math.log(sigma)) / math.log(2)
    assert float(penalty.detach()) == pytest.approx(0.5 * kl_bits)
    at_mean, _ = vb(torch.tensor([[0.3, -0.2]], dtype=torch.float64), None)
    assert at_mean.flatten().tolist() == pytest.approx([2 * 0.3 + 0.5, -0.3])


@pytest.mark.fast
def test_precode_sits_between_the_representation_and_the_output_layer():
    lenet = build_model("lenet", 1, 8, 10)
    sizes = {n: p.numel() for n, p in lenet.named_parameters()}
    model = defense_from_config(config("defense=precode", "bottleneck=16").defense).victim(lenet)
    assert last_linear_weight(model) is model.head.weight and model.head.in_features == 48  # 12 x 2 x 2
    assert sum(p.numel() for p in model.parameters()) == sum(sizes.values()) + (48 * 32 + 32) + (16 * 48 + 48)
    x = digits()[0].float()
    logits, _ = model(x, torch.zeros(2, 16))
    assert torch.equal(model(x), logits)  # the test-time model is the mean


@pytest.mark.fast
def test_the_clients_update_depends_on_its_draw_and_includes_the_kl_term():
    model = victim()
    images, labels = digits()
    noise = torch.randn((2, 1, 16), generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    got = shared_gradients(model, images[:, None], labels[:, None], noise=noise)
    logits, penalty = model(images[:1], noise[0])
    loss = soft_cross_entropy(logits, F.one_hot(labels[:1], 10).double()) + penalty
    want = torch.autograd.grad(loss, list(model.parameters()))
    for g, w in zip(got, want):
        assert torch.allclose(g[0], w, atol=1e-12)
    other = shared_gradients(model, images[:, None], labels[:, None], noise=noise + 1)
    assert not torch.allclose(other[0], got[0])


@pytest.mark.fast
def test_a_workers_update_is_its_loss_at_its_own_draw():
    model = victim()
    images, labels = digits(n=4)
    defense = defense_from_config(config("defense=precode", "bottleneck=16").defense)
    defended, _ = client_updates(model, images.reshape(2, 2, 1, 8, 8), labels.reshape(2, 2), defense,
                                 step=3, seed=7, vectorize=False)
    for w in range(2):
        gen = torch.Generator().manual_seed(worker_seed(7, 3, w))
        logits, penalty = model(images[2 * w:2 * w + 2], torch.randn(2, 16, generator=gen, dtype=torch.float64))
        want = torch.autograd.grad(F.cross_entropy(logits, labels[2 * w:2 * w + 2]) + penalty,
                                   list(model.parameters()))
        for g, x in zip(defended[w], want):
            assert torch.allclose(g, x, atol=1e-12)


@pytest.mark.fast
def test_the_adaptive_match_is_zero_at_the_true_image_and_draw_and_the_mean_is_not():
    model = victim()
    images, labels = digits()
    cfg = config("defense=precode", "attack.num_targets=2", "attack.steps=1", "attack.labels=idlg")
    attack = Attack(cfg.attack, model, images[:, None], labels[:, None], defense_from_config(cfg.defense), 0,
                    torch.device("cpu"))
    draw = torch.randn((2, 1, 16), generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # seed + 1
    onehot = F.one_hot(labels, 10).double()[:, None]
    solving = GradientMatch(model, optimize_labels=False, solve_noise=True)
    value, _, _, d_noise = solving(images[:, None], onehot, attack.targets, noise=draw)
    assert value.max() < 1e-24 and d_noise.abs().max() < 1e-12
    at_mean, _, _, none = GradientMatch(model, optimize_labels=False)(images[:, None], onehot, attack.targets)
    assert none is None and at_mean.min() > 1e-6


def test_the_adaptive_attack_breaks_precode_and_the_plain_one_does_not():
    model = victim(seed=2)
    images, labels = digits(n=2, seed=4)
    rebuilt = {}
    for attacker in ("dlg", "adaptive"):
        cfg = config(f"attack={attacker}", "defense=precode", "bottleneck=16", "attack.num_targets=2",
                     "attack.labels=soft", "attack.steps=100", "attack.restarts=1")
        outcome = run_attack(cfg.attack, model, images[:, None], labels[:, None],
                             defense_from_config(cfg.defense), 0, "cpu", progress_bar=False)
        rebuilt[attacker] = sum(t["success"] for t in outcome.targets)
    assert rebuilt == {"dlg": 0, "adaptive": 2}


@pytest.mark.parametrize("argv,message", [
    (["defense=precode", "bottleneck=0"], "bottleneck=0: allowed range is 1 <= bottleneck"),
    (["defense=precode", "beta=-1"], "beta=-1"),
    (["defense=precode", "train=smoke", "train.local_steps=2"], "train.local_steps=2: defense=precode draws"),
    (["task=text", "defense=precode"], "defense=precode: extends an image model; not built for task=text"),
])
@pytest.mark.fast
def test_bad_precode_input_is_one_line(argv, message):
    with pytest.raises(ConfigError) as err:
        preflight(argv, CONF)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_training_under_precode_runs_through_the_clients(run_py):
    res = run_py("defense=precode", "train=smoke", "train.lr=1e-3", "train.max_train_images=256",
                 "train.max_test_images=100", "train.epochs=1", "attack.num_targets=2", "attack.steps=2",
                 "attack.labels=soft")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "defense=precode bottleneck=256 beta=0.001 (K = 256)" in res.stdout
    assert "training (smoke): test accuracy" in res.stdout
