"""One job's figure: its reconstruction grid (reconstruction.png), drawn from numpy arrays
(no torch in report/)."""
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

plt.switch_backend("agg")  # files only, also where a display is set
GRID_MAX_IMAGES = 16


def save_grid(path: Path, truth: np.ndarray, recon: np.ndarray, mse: list[float], title: str) -> Path:
    """Ground truth row over reconstruction row (images [N, C, H, W]), each reconstruction
    captioned with its MSE."""
    truth, recon = truth[:GRID_MAX_IMAGES], recon[:GRID_MAX_IMAGES]
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


def _displayable(img: np.ndarray) -> np.ndarray:
    arr = np.clip(img, 0, 1)
    return arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
