"""What one job leaves in its output folder besides its record (metrics.json: job_record.py):
the snapshots along the attack (npz) and the images MLflow shows of them (the reconstruction
grid PNG: report/job_figures.py)."""
import math
from pathlib import Path

import numpy as np
import torch

from gradleak.report.job_figures import GRID_MAX_IMAGES


def save_snapshots(path: Path, truth: torch.Tensor, steps: list[int], recon: list[torch.Tensor]) -> Path:
    """truth [T, B, C, H, W] -> "truth" [T*B, C, H, W]; "recon" [S, T*B, C, H, W]."""
    flat = truth.flatten(0, 1).numpy().astype(np.float32)
    stack = torch.stack(recon).flatten(1, 2).numpy().astype(np.float32) if recon else flat[None, :0]
    np.savez_compressed(path, truth=flat, steps=np.asarray(steps), recon=stack)
    return path


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
    """Per snapshot: each target's ground truth over its reconstruction at that step (up to
    GRID_MAX_IMAGES), in about as many pairs of rows as columns, so that the picture fills the
    UI's square image panel."""
    top = truth.flatten(0, 1)[:GRID_MAX_IMAGES].numpy()
    columns = min(len(top), math.ceil(math.sqrt(2 * len(top))))  # 2n / columns rows ~ columns
    chunks = range(0, len(top), columns)
    return [tile_rows([part for i in chunks for part in (top[i:i + columns], r.flatten(0, 1)[i:i + columns].numpy())])
            for r in recon]
