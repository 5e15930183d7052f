import math

import pytest
import torch

from gradleak.victim.defenses import defense_from_config
from gradleak.victim.defenses.noise import add_noise, noise_variance
from gradleak.victim.defenses.precision import lower_precision
from gradleak.victim.defenses.prune import prune

pytestmark = pytest.mark.fast


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("noise", ["gaussian", "laplacian"])
@pytest.mark.parametrize("scale", [1e-4, 1e-2])
def test_noise_std_is_scale_for_both_noises(noise, scale):
    zeros = [torch.zeros(1000, 1000, dtype=torch.float64)]
    out = add_noise(zeros, noise=noise, scale=scale, generator=gen())[0]
    assert abs(float(out.std()) / scale - 1) < 0.05
    assert abs(float(out.mean())) < 0.01 * scale
    assert noise_variance(noise, scale) == pytest.approx(scale**2)


def test_laplacian_has_laplace_tails():
    out = add_noise([torch.zeros(10**6, dtype=torch.float64)], noise="laplacian", scale=1.0, generator=gen())[0]
    # std 1 means b = 1/sqrt(2); P(|X| > 3b) = exp(-3) for Laplace(0, b), 0.034 for a Gaussian.
    assert abs(float((out.abs() > 3 / math.sqrt(2)).double().mean()) - 0.0498) < 0.002


def test_noise_is_seeded():
    g = [torch.zeros(100)]
    a = add_noise(g, noise="gaussian", scale=1.0, generator=gen(1))[0]
    b = add_noise(g, noise="gaussian", scale=1.0, generator=gen(1))[0]
    c = add_noise(g, noise="gaussian", scale=1.0, generator=gen(2))[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("ratio", [0.0, 0.01, 0.2, 0.7, 0.999])
def test_prune_zeroes_exact_fraction_per_tensor(ratio):
    grads = [torch.randn(12, 3, 5, 5), torch.randn(12), torch.randn(10, 768)]
    for g, p in zip(grads, prune(grads, ratio=ratio)):
        assert int((p == 0).sum()) == round(ratio * g.numel())
        kept = p != 0
        assert torch.equal(p[kept], g[kept])  # survivors untouched
        if kept.any() and (~kept).any():
            assert g[~kept].abs().max() <= g[kept].abs().min()  # the smallest went


@pytest.mark.fast
def test_prune_breaks_ties_at_the_cut_by_position():
    """Magnitudes with many ties: exactly the entries a stable sort puts first are zeroed."""
    g = torch.randint(1, 6, (3, 400), generator=gen(0)).float() * (torch.rand(3, 400, generator=gen(1)) - 0.5).sign()
    pruned = prune([g], ratio=0.37, batch_dims=1)[0]
    for row, out in zip(g, pruned):
        order = sorted(range(len(row)), key=lambda i: (abs(float(row[i])), i))
        gone = set(order[:round(0.37 * 400)])
        assert [i for i in range(len(row)) if out[i] == 0] == sorted(gone)


def test_prune_per_batch_entry():
    g = torch.randn(4, 50)
    g[0] *= 1000  # a huge entry must not steal the others' budget
    p = prune([g], ratio=0.3, batch_dims=1)[0]
    assert ((p == 0).sum(dim=1) == 15).all()


# Round-to-nearest: relative error <= 2^-(mantissa bits + 1) for normal numbers, and at most
# half the subnormal spacing below the smallest normal (fp16's min normal is 6.1e-5).
@pytest.mark.parametrize("precision,rel_bound,abs_floor", [("fp16", 2**-11, 2**-25), ("bf16", 2**-8, 0.0)])
def test_float_round_trip_error_bound(precision, rel_bound, abs_floor):
    g = torch.randn(100000, dtype=torch.float32) * 1e-2
    out = lower_precision([g], precision=precision)[0]
    assert out.dtype == g.dtype
    err = (out - g).abs()
    assert (err <= torch.clamp(rel_bound * g.abs(), min=abs_floor) * 1.0001).all()
    assert float((err / g.abs()).max()) > rel_bound / 4  # it really rounded


def test_int8_symmetric_per_tensor():
    g = torch.randn(3, 1000)
    out = lower_precision([g], precision="int8", batch_dims=1)[0]
    step = g.abs().amax(dim=1, keepdim=True) / 127
    assert ((out - g).abs() <= step / 2 + 1e-7).all()
    levels = torch.round(out / step)
    assert torch.allclose(out, levels * step, atol=1e-6) and levels.abs().max() == 127
    assert len(torch.unique(levels)) <= 255


def test_defense_from_config_dispatches():
    g = [torch.ones(10)]
    assert torch.equal(defense_from_config({"name": "none"})(g)[0], g[0])
    pruned = defense_from_config({"name": "prune", "ratio": 0.5})(g)[0]
    assert int((pruned == 0).sum()) == 5
