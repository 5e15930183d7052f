"""What one job leaves in its output folder: metrics.json, the reconstruction grid PNG,
the snapshots along the attack (npz) and the resolved config."""
import json
import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

plt.switch_backend("agg")  # files only, also where a display is set
GRID_MAX_IMAGES = 16


def write_json(path: Path, data: dict) -> Path:
    """JSON with non-finite floats written as null (strict JSON readers reject NaN)."""
    path.write_text(json.dumps(_finite(data), indent=1))
    return path


def _finite(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def save_snapshots(path: Path, truth: torch.Tensor, steps: list[int], recon: list[torch.Tensor]) -> Path:
    """truth [T, B, C, H, W] -> "truth" [T*B, C, H, W]; "recon" [S, T*B, C, H, W]."""
    flat = truth.flatten(0, 1).numpy().astype(np.float32)
    stack = torch.stack(recon).flatten(1, 2).numpy().astype(np.float32) if recon else flat[None, :0]
    np.savez_compressed(path, truth=flat, steps=np.asarray(steps), recon=stack)
    return path


def save_grid(path: Path, truth: torch.Tensor, recon: torch.Tensor, mse: list[float], title: str) -> Path:
    """Ground truth row over reconstruction row, each reconstruction captioned with its MSE."""
    truth, recon = truth.flatten(0, 1)[:GRID_MAX_IMAGES], recon.flatten(0, 1)[:GRID_MAX_IMAGES]
    n = len(truth)
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n + 0.6, 3.2), squeeze=False)
    for i in range(n):
        for row, img in ((0, truth[i]), (1, recon[i])):
            ax = axes[row, i]
            ax.imshow(_displayable(img), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
        axes[1, i].set_xlabel(f"MSE {mse[i]:.1e}", fontsize=8)
    axes[0, 0].set_ylabel("ground truth")
    axes[1, 0].set_ylabel("reconstruction")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _displayable(img: torch.Tensor) -> np.ndarray:
    arr = img.clamp(0, 1).numpy()
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
