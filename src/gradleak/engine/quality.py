"""Reconstruction quality: per-image MSE / PSNR / SSIM on [0, 1], batch matching, the
summary over a job's targets with both verdicts' intervals, threshold curves."""
import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from gradleak.intervals import wilson

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


PSNR_THRESHOLDS_DB = np.arange(10.0, 60.5, 1.0)
SSIM_THRESHOLDS = np.round(np.arange(0.0, 1.0001, 0.05), 2)


def summarize_targets(per_target: list[dict], reid_chance: float) -> dict[str, float]:
    """Means, medians and both verdicts' rates over targets, each rate with its Wilson
    interval over the n targets (diverged targets count as failures)."""
    col = {k: np.array([t[k] for t in per_target], dtype=float)
           for k in ("mse", "psnr", "ssim", "label_acc", "success", "loss", "diverged", "evals",
                     "reidentified")}
    n = len(per_target)
    summary = {
        "n_targets": n,
        "mse_mean": float(col["mse"].mean()),
        "mse_median": float(np.median(col["mse"])),
        "psnr_mean": float(col["psnr"].mean()),
        "psnr_median": float(np.median(col["psnr"])),
        "ssim_mean": float(col["ssim"].mean()),
        "label_acc": float(col["label_acc"].mean()),
        "success_rate": float(col["success"].mean()),
        "reid_rate": float(col["reidentified"].mean()),
        "reid_chance": reid_chance,
        "loss_median": float(np.median(col["loss"])),
        "diverged_rate": float(col["diverged"].mean()),
        "evals_mean": float(col["evals"].mean()),
    }
    for rate, hits in (("success_rate", col["success"]), ("reid_rate", col["reidentified"])):
        summary[f"{rate}_lo"], summary[f"{rate}_hi"] = wilson(round(hits.sum()), n)
    return summary


def threshold_curves(per_target: list[dict]) -> dict[str, list[float]]:
    """Share of targets with PSNR >= t and SSIM >= s over a grid of thresholds, so a reader
    picks a threshold and sees the verdict move."""
    psnr = np.array([t["psnr"] for t in per_target])
    ssim = np.array([t["ssim"] for t in per_target])
    return {"psnr_db": PSNR_THRESHOLDS_DB.tolist(),
            "share_psnr": [float((psnr >= x).mean()) for x in PSNR_THRESHOLDS_DB],
            "ssim": SSIM_THRESHOLDS.tolist(),
            "share_ssim": [float((ssim >= x).mean()) for x in SSIM_THRESHOLDS]}
