"""victim/defenses/conv_jacobian.py: each feature's input-gradient norm by local Jacobians
equals reverse mode's, on the LeNet and on chains whose strides, paddings and kernels differ."""
import pytest
import torch
from torch import nn
from torch.func import jacrev

from gradleak.victim.defenses.conv_jacobian import conv_chain, feature_gradient_norms
from gradleak.victim.defenses.soteria import conv_chain_norms
from gradleak.victim.models import build_model


def by_reverse_mode(body: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return torch.stack([jacrev(lambda x: body(x[None]).flatten())(x).flatten(1).norm(dim=1) for x in images])


def chain(*layers) -> nn.Sequential:
    torch.manual_seed(1)
    mods = []
    for i, (cin, cout, kernel, stride, pad) in enumerate(layers):
        mods += [nn.Conv2d(cin, cout, kernel, stride, pad), nn.Tanh() if i % 2 else nn.Sigmoid()]
    return nn.Sequential(*mods).double()


@pytest.mark.fast
@pytest.mark.parametrize("channels,side", [(1, 28), (3, 32)])
def test_the_lenets_norms_are_reverse_modes(channels, side):
    torch.manual_seed(0)
    body = build_model("lenet", channels, side, 10).double().body
    images = torch.rand(2, channels, side, side, dtype=torch.float64)
    norms, r = feature_gradient_norms(conv_chain(body), images)
    assert norms.shape == (2, 12 * 7 * 7 if side == 28 else 12 * 8 * 8)
    torch.testing.assert_close(norms, by_reverse_mode(body, images), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(r, body(images).flatten(1))


@pytest.mark.fast
@pytest.mark.parametrize("layers", [
    [(1, 4, 3, 1, 1), (4, 5, 5, 2, 2), (5, 3, 3, 1, 0)],  # unpadded stride-1 last layer
    [(2, 3, 5, 2, 2), (3, 3, 3, 2, 1)],                    # strided last layer: the local path throughout
    [(1, 3, 3, 1, 1)],                                     # one layer
])
def test_other_chains_on_a_rectangular_image(layers):
    body = chain(*layers)
    images = torch.rand(3, layers[0][0], 13, 11, dtype=torch.float64)
    norms, _ = feature_gradient_norms(conv_chain(body), images)
    torch.testing.assert_close(norms, by_reverse_mode(body, images), rtol=1e-10, atol=1e-12)


@pytest.mark.fast
def test_what_is_not_a_chain_goes_to_reverse_mode():
    assert conv_chain(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())) is None  # not in the derivative table
    assert conv_chain(nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2), nn.Sigmoid())) is None
    assert conv_chain(nn.Sequential(nn.Conv2d(1, 2, 3))) is None
    images = torch.rand(2, 3, 32, 32)
    assert conv_chain_norms(build_model("resnet20", 3, 32, 10), images) is None
    assert conv_chain_norms(build_model("lenet", 3, 32, 10), images) is not None
