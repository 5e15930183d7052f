"""The run's terminal summary: its verdict lines count what the rates were computed from."""
import pytest

from gradleak.jobs.terminal import _verdict


@pytest.mark.fast
def test_a_batch_jobs_reidentification_counts_images_and_its_interval_is_over_targets():
    # 2 targets of 4 images: one image of the first target and none of the second re-identified
    a = {"n_targets": 2, "reid_rate": 0.125, "reid_rate_lo": 0.0, "reid_rate_hi": 0.658}
    assert _verdict("re-identified", a, "reid_rate", per_target=4) == \
        "re-identified: 1/8 images of 2 targets (12%, 95% Wilson 0%-66%)"
    one = {"n_targets": 16, "success_rate": 0.5, "success_rate_lo": 0.28, "success_rate_hi": 0.72}
    assert _verdict("exact", one, "success_rate") == "exact: 8/16 (50%, 95% Wilson 28%-72%)"
