"""Galleries, the paper's Fig. 7 view: per defense family, the ground truth on top and one
row per setting (undefended first), the same targets in every row (the lowest seed's
draw: no cherry-picking), each cell titled with both verdicts. `summary` holds one job per
setting and seed (the study's figures pass each setting's strongest attacker's), and each
row names its attacker."""
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

COLUMNS = 8


def _image(array: np.ndarray) -> np.ndarray:
    img = np.clip(array, 0, 1)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def _rows(summary: pd.DataFrame, family: str) -> pd.DataFrame:
    """The family's jobs of its lowest seed on its dataset, led by the undefended job."""
    jobs = summary[(summary["family"] == family) & summary["snapshots"].notna()]
    if jobs.empty:
        return jobs
    seed, dataset = jobs["seed"].min(), jobs["dataset.name"].mode().iloc[0]
    same = summary[(summary["seed"] == seed) & (summary["dataset.name"] == dataset) & summary["snapshots"].notna()]
    base = same[same["family"] == "none"].sort_values("stage").head(1)
    rows = same[same["family"] == family].sort_values("strength_rank")
    return pd.concat([base, rows], ignore_index=True)


def _cell_title(t: pd.Series) -> str:
    reid = "re-id ✓" if t["reidentified"] >= 1 else "re-id ✗"
    exact = "exact ✓" if t["success"] else "exact ✗"
    return f"{reid}\n{exact}\n{t['psnr']:.0f} dB"


def gallery(summary: pd.DataFrame, targets: pd.DataFrame, results_dir: Path, family: str):
    rows = _rows(summary, family)
    if rows.empty:
        return None
    loaded = [np.load(Path(results_dir) / p) for p in rows["snapshots"]]
    n = min(COLUMNS, *(len(z["truth"]) for z in loaded))
    fig, axes = plt.subplots(len(rows) + 1, n, figsize=(1.25 * n + 1.6, 1.55 * (len(rows) + 1) + 0.5),
                             squeeze=False)
    for i in range(n):
        axes[0, i].imshow(_image(loaded[0]["truth"][i]), cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_ylabel("ground truth", fontsize=8)
    for r, ((_, job), z) in enumerate(zip(rows.iterrows(), loaded), start=1):
        mine = targets[(targets["stage"] == job["stage"]) & (targets["job"] == job["job"])].sort_values("target")
        who = f"\n{job['attacker']}" if "attacker" in job else ""
        for i in range(n):
            axes[r, i].imshow(_image(z["recon"][-1][i]), cmap="gray", vmin=0, vmax=1)
            if i < len(mine):
                axes[r, i].set_xlabel(_cell_title(mine.iloc[i]), fontsize=6)  # below its own image
        axes[r, 0].set_ylabel(job["strength_label"] + who, fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    title = rows["family_title"].iloc[-1]
    fig.suptitle(f"{title}: the same {n} test images (seed {int(rows['seed'].min())}) under each setting",
                 fontsize=10)
    fig.tight_layout()
    return fig
