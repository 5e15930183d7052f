"""Re-identification: would someone holding the private data recognize the reconstruction?

Each reconstructed image is ranked against its true image and M distractors drawn from
the same split, by pixel-space MSE (nearest neighbour in [0, 1]). Rank 1 means the
reconstruction is closer to the private image than to any other image of the data:
a readable reconstruction is re-identified even when its MSE is far above the exact-
reconstruction threshold, and pure noise is re-identified at chance, 1 / (M + 1).
MSE needs no learned features (none can be downloaded here, so no LPIPS) and is the
scale the paper reports; docs/attack.md (The two verdicts) says how the verdict moves with it.
"""
import torch


def draw_distractors(n_split: int, m: int, seed: int) -> torch.Tensor:
    """A seeded draw of min(m + 1, n_split) indices of the split: each target's distractors
    are these minus itself, the first m of them."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n_split, generator=gen)[:min(m + 1, n_split)]


def reid_ranks(recon: torch.Tensor, truth_index: torch.Tensor, split_images: torch.Tensor,
               pool: torch.Tensor, m: int) -> torch.Tensor:
    """Rank of each true image among itself and its m distractors by MSE to its reconstruction.

    recon [N, C, H, W] in [0, 1]; truth_index [N] their indices in split_images; pool: the
    drawn distractor indices. Returns int ranks [N], 1 = re-identified. Ties count in the
    reconstruction's favour (an exact copy is rank 1 unless a distractor equals the truth).
    """
    flat = recon.flatten(1).double().clamp(0, 1)
    candidates = split_images[pool].flatten(1).double()
    truth = split_images[truth_index].flatten(1).double()
    to_truth = ((flat - truth) ** 2).mean(1)                                 # [N]
    to_pool = torch.cdist(flat, candidates).pow(2) / flat.shape[1]           # [N, P] as MSE
    is_self = pool[None, :] == truth_index[:, None]
    others = (~is_self).cumsum(dim=1) <= m                                   # first m non-self
    closer = (to_pool < to_truth[:, None] - 1e-12) & others & ~is_self
    return 1 + closer.sum(dim=1)
