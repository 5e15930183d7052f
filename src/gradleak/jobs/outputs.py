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


def tile_rows(rows: list[np.ndarray], pixels: int = 48, gap: int = 2) -> np.ndarray:
    """Rows of images ([N, C, H, W] floats in [0, 1] each) as one uint8 RGB picture, each image
    enlarged to about `pixels` (nearest neighbour: 8x8 digits stay readable)."""
    n = max(len(r) for r in rows)
    h, w = rows[0].shape[-2:]
    scale = max(1, round(pixels / max(h, w)))
    cell_h, cell_w = h * scale + gap, w * scale + gap
    out = np.full((len(rows) * cell_h + gap, n * cell_w + gap, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(np.clip(row, 0, 1)):
            rgb = np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img
            big = rgb.transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1)
            y, x = gap + i * cell_h, gap + j * cell_w
            out[y:y + big.shape[0], x:x + big.shape[1]] = (big * 255).round().astype(np.uint8)
    return out


def snapshot_images(truth: torch.Tensor, recon: list[torch.Tensor]) -> list[np.ndarray]:
    """Per snapshot: ground truth over the reconstruction at that step (up to GRID_MAX_IMAGES)."""
    top = truth.flatten(0, 1)[:GRID_MAX_IMAGES].numpy()
    return [tile_rows([top, r.flatten(0, 1)[:GRID_MAX_IMAGES].numpy()]) for r in recon]
