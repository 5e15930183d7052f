"""Reconstruction quality: per-image MSE / PSNR / SSIM on [0, 1], batch matching, the
summary over a job's targets."""
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

PSNR_CAP_DB = 100.0  # an exact reconstruction has infinite PSNR; report it as 100 dB


def match_images(recon: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Order of `recon` [B, ...] that best matches `truth` [B, ...]: the assignment with
    the lowest total MSE (DLG's reconstructions come back in no particular order)."""
    cost = ((recon[:, None] - truth[None]) ** 2).flatten(2).mean(-1)
    rows, cols = linear_sum_assignment(cost.double().cpu().numpy())
    order = np.empty(len(cols), dtype=np.int64)
    order[cols] = rows
    return torch.as_tensor(order, device=recon.device)


def image_metrics(recon: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image metrics for recon, truth [N, C, H, W] in [0, 1]."""
    recon, truth = recon.double().clamp(0, 1), truth.double()
    mse = ((recon - truth) ** 2).flatten(1).mean(1)
    psnr = peak_signal_noise_ratio(recon, truth, data_range=1.0, reduction="none", dim=(1, 2, 3))
    side = min(truth.shape[-2:])
    kernel = min(11, side if side % 2 else side - 1)
    ssim = structural_similarity_index_measure(recon, truth, data_range=1.0, kernel_size=kernel,
                                               reduction="none")
    return {"mse": mse, "psnr": psnr.clamp(max=PSNR_CAP_DB), "ssim": ssim}


def summarize_targets(per_target: list[dict]) -> dict[str, float]:
    """Means, medians and rates over targets (diverged targets count as failures)."""
    col = {k: np.array([t[k] for t in per_target], dtype=float) for k in per_target[0]}
    return {
        "mse_mean": float(col["mse"].mean()),
        "mse_median": float(np.median(col["mse"])),
        "psnr_mean": float(col["psnr"].mean()),
        "ssim_mean": float(col["ssim"].mean()),
        "label_acc": float(col["label_acc"].mean()),
        "success_rate": float(col["success"].mean()),
        "loss_median": float(np.median(col["loss"])),
        "diverged_rate": float(col["diverged"].mean()),
        "evals_mean": float(col["evals"].mean()),
    }
