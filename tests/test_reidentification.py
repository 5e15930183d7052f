"""Re-identification on constructed cases: exact copies, noisy copies, pure noise."""
import pytest
import torch
from omegaconf import OmegaConf
from scipy.stats import binom

from gradleak.engine.reidentification import draw_distractors, reid_ranks
from gradleak.victim.data import load_split

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def split():
    return load_split(OmegaConf.create({"name": "digits"}), "test")  # 360 real digits


def test_an_exact_copy_is_rank_one(split):
    index = torch.arange(20)
    pool = draw_distractors(len(split), 99, seed=0)
    ranks = reid_ranks(split.images[index], index, split.images, pool, 99)
    assert ranks.tolist() == [1] * 20


def test_a_readable_noisy_copy_is_still_rank_one(split):
    index = torch.arange(20)
    noisy = (split.images[index] + 0.1 * torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    pool = draw_distractors(len(split), 99, seed=0)
    assert (reid_ranks(noisy.clamp(0, 1), index, split.images, pool, 99) == 1).float().mean() >= 0.9


def test_pure_noise_is_re_identified_at_chance_within_a_binomial_bound(split):
    n, m = 300, 99
    index = torch.arange(n)
    noise = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    pool = draw_distractors(len(split), m, seed=2)
    hits = int((reid_ranks(noise, index, split.images, pool, m) == 1).sum())
    assert hits <= binom.ppf(0.999, n, 1 / (m + 1))  # chance: 1 in 100


def test_ranks_count_only_closer_distractors_and_never_the_target_itself(split):
    pool = torch.arange(10)  # the target (index 3) is in the pool: it must not count
    index = torch.tensor([3])
    recon = split.images[[5]]  # the reconstruction is distractor 5 exactly
    rank = reid_ranks(recon, index, split.images, pool, m=9)
    to_truth = ((recon - split.images[3]) ** 2).mean()
    closer = sum(int(((recon - split.images[i]) ** 2).mean() < to_truth) for i in range(10) if i != 3)
    assert int(rank) == 1 + closer and closer >= 1
    assert int(reid_ranks(recon, index, split.images, pool, m=2)) <= 3  # only the first 2 others
