"""Exact per-feature input-gradient norms ||d r_f / d x|| of a chain of convolutions and
sigmoids (DLG's LeNet body), without the full Jacobian's cost.

Soteria scores every feature of every image at every training step. Reverse mode
(`torch.func.jacrev`) backpropagates each of the F features through the whole net, and forward
mode pushes every input pixel through full-size feature maps, although a pixel moves only
the positions whose receptive field holds it. Here each position carries the Jacobian of
its output on its own receptive field (a P x P input patch, `_local_step`), which is cheap
while fields are small; the last convolution, whose fields cover the image, is taken per
input pixel on the few positions that pixel moves (`_last_layer_norms`): a transposed
convolution of that window, squared and summed back into place with `fold`.

Layout of a local Jacobian G: [C, b, cin, P, P, H, W], position (i, j) of channel C
depending on the input patch that starts at pixel (s*i - o, s*j - o) (s: the stride so far,
o: the padding so far). Every patch entry is one input pixel's coefficient, so entries that
fall outside the image (the padding) never mix with real pixels and are simply never read.
"""
import torch
import torch.nn.functional as F
from torch import nn

_DERIVATIVE = {nn.Sigmoid: lambda y: y * (1 - y), nn.Tanh: lambda y: 1 - y * y}


def conv_chain(module: nn.Module) -> list[tuple[nn.Conv2d, nn.Module]] | None:
    """The (convolution, activation) pairs of an nn.Sequential this module can handle, or None."""
    if not isinstance(module, nn.Sequential) or len(module) == 0 or len(module) % 2:
        return None
    pairs = list(zip(module[::2], module[1::2]))
    for conv, act in pairs:
        square = (isinstance(conv, nn.Conv2d) and conv.groups == 1 and conv.padding_mode == "zeros"
                  and isinstance(conv.padding, tuple) and len(set(conv.kernel_size)) == 1
                  and len(set(conv.stride)) == 1 and len(set(conv.padding)) == 1 and conv.dilation == (1, 1))
        if not square or type(act) not in _DERIVATIVE:
            return None
    return pairs


def feature_gradient_norms(pairs, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [b, cin, H, W] -> (||d r_f / d x|| per image and feature [b, F], r [b, F]), r the
    flattened output of the chain."""
    b, cin, height, width = x.shape
    g = torch.eye(cin, dtype=x.dtype, device=x.device).reshape(cin, 1, cin, 1, 1, 1, 1)
    g = g.expand(cin, b, cin, 1, 1, height, width)
    stride, offset = 1, 0
    for conv, act in pairs[:-1]:
        x = act(conv(x))
        g = _through_activation(_local_step(g, conv, stride), act, x)
        stride, offset = stride * conv.stride[0], offset + stride * conv.padding[0]
    conv, act = pairs[-1]
    y = act(conv(x))
    if conv.stride[0] != 1:  # the windowed last layer below assumes stride 1
        g = _through_activation(_local_step(g, conv, stride), act, y)
        squares = g.pow(2).sum((2, 3, 4)).transpose(0, 1)
    else:
        squares = _last_layer_norms(g, conv, stride, offset, (height, width)) * _DERIVATIVE[type(act)](y).pow(2)
    return squares.sqrt().flatten(1), y.flatten(1)


def _through_activation(g: torch.Tensor, act: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """A pre-activation local Jacobian times the activation's slope at its output y [b, C, H, W]."""
    return g * _DERIVATIVE[type(act)](y).transpose(0, 1)[:, :, None, None, None]


def _local_step(g: torch.Tensor, conv: nn.Conv2d, stride: int) -> torch.Tensor:
    """The pre-activation local Jacobian one convolution further: its patch grows by
    stride * (kernel - 1); kernel tap (ki, kj) lands at patch offset (stride*ki, stride*kj)."""
    k, st, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    channels, b, cin, patch, _, height, width = g.shape
    out_h, out_w = (height + 2 * p - k) // st + 1, (width + 2 * p - k) // st + 1
    grown = patch + stride * (k - 1)
    padded = F.pad(g, (p, p, p, p))
    new = g.new_zeros(conv.out_channels, b, cin, grown, grown, out_h, out_w)
    for ki in range(k):
        for kj in range(k):
            taps = padded[..., ki: ki + st * (out_h - 1) + 1: st, kj: kj + st * (out_w - 1) + 1: st]
            new[:, :, :, stride * ki: stride * ki + patch, stride * kj: stride * kj + patch] += (
                torch.tensordot(conv.weight[:, :, ki, kj], taps, dims=1))
    return new


def _window(size: int, positions: int, patch: int, stride: int, offset: int, device):
    """Per input pixel a: the positions whose patch holds it, lo(a) .. lo(a) + n - 1, with
    the pixel's index u inside each patch and whether that pair is real."""
    a = torch.arange(size, device=device)
    n = -(-patch // stride)
    lo = torch.div(a + offset - patch, stride, rounding_mode="floor") + 1
    pos = lo[:, None] + torch.arange(n, device=device)
    u = a[:, None] + offset - stride * pos
    real = (pos >= 0) & (pos < positions) & (u >= 0) & (u < patch)
    return lo, pos.clamp(0, positions - 1), u.clamp(0, patch - 1), real


def _last_layer_norms(g, conv: nn.Conv2d, stride: int, offset: int, image: tuple[int, int]) -> torch.Tensor:
    """sum over input pixels of (d z_f / d x_a)^2 for the stride-1 convolution after g:
    [b, C_out, H, W] (pre-activation)."""
    channels, b, cin, patch, _, height, width = g.shape
    k, p = conv.kernel_size[0], conv.padding[0]
    lo_y, pos_y, u_y, real_y = _window(image[0], height, patch, stride, offset, g.device)
    lo_x, pos_x, u_x, real_x = _window(image[1], width, patch, stride, offset, g.device)
    n = pos_y.shape[1]
    # per pixel (cin, ay, ax), its window of positions: [C, b, cin, ay, wy, ax, wx]
    taps = g[:, :, :, u_y[:, :, None, None], u_x[None, None], pos_y[:, :, None, None], pos_x[None, None]]
    taps = taps * (real_y[:, :, None, None] & real_x[None, None]).to(g.dtype)
    taps = taps.permute(1, 2, 3, 5, 0, 4, 6).reshape(-1, channels, n, n)
    # z[i] = sum_k w[k] h[i + k - p]: window position w moves outputs lo + w + p - k
    moved = F.conv_transpose2d(taps, conv.weight.flip(-1, -2).transpose(0, 1))
    m = n + k - 1  # outputs of a window, from lo + p - (k - 1)
    moved = (moved * moved).reshape(b, cin, image[0], image[1], conv.out_channels, m, m)
    moved = moved[:, 0] if cin == 1 else moved.sum(1)
    # pixels sharing a window start add up, then the windows are laid into the output map
    groups_y, groups_x = int(lo_y.max() - lo_y.min()) + 1, int(lo_x.max() - lo_x.min()) + 1
    by_y = moved.new_zeros(b, groups_y, image[1], conv.out_channels, m, m).index_add_(1, lo_y - lo_y.min(), moved)
    by_yx = by_y.new_zeros(b, groups_y, groups_x, conv.out_channels, m, m).index_add_(2, lo_x - lo_x.min(), by_y)
    blocks = by_yx.permute(0, 3, 4, 5, 1, 2).reshape(b, -1, groups_y * groups_x)
    canvas = F.fold(blocks, (groups_y + m - 1, groups_x + m - 1), kernel_size=m)
    first_y, first_x = int(lo_y.min()) + p - (k - 1), int(lo_x.min()) + p - (k - 1)
    out_h, out_w = height + 2 * p - k + 1, width + 2 * p - k + 1
    canvas = F.pad(canvas, (max(first_x, 0), max(out_w - first_x - canvas.shape[-1], 0),
                            max(first_y, 0), max(out_h - first_y - canvas.shape[-2], 0)))
    top, left = max(-first_y, 0), max(-first_x, 0)
    return canvas[..., top: top + out_h, left: left + out_w]
