"""The snapshots of an attack whose length is known only at its end."""
import pytest
import torch

from gradleak.engine.snapshots import Snapshots


def run(n: int, last: int) -> tuple[list[int], Snapshots]:
    frames = Snapshots(n)
    for step in range(last + 1):
        frames.offer(step, torch.full((1,), float(step)))
        assert len(frames.kept) <= 2 * n  # memory stays bounded however long the attack runs
    steps, images = frames.chosen()
    assert [int(i) for i in images] == [min(s, 1) for s in steps]  # each frame is its step's (clamped)
    return steps, frames


@pytest.mark.fast
def test_snapshots_span_the_steps_the_attack_took():
    # stopped at step 25 of a planned 300: six frames from 0 to 25, not just 0 and 25
    assert run(6, 25)[0] == [0, 4, 8, 16, 20, 25]
    assert run(6, 2000)[0] == [0, 512, 768, 1280, 1536, 2000]
    assert run(6, 3)[0] == [0, 1, 2, 3]  # fewer steps than frames: every step
    assert run(6, 0)[0] == [0]


@pytest.mark.fast
def test_no_snapshots_asked_none_kept():
    steps, frames = run(0, 50)
    assert steps == [] and frames.kept == {}


@pytest.mark.fast
def test_a_snapshot_image_fills_a_square_panel():
    """8 digit targets: 4 columns, truth over reconstruction twice (4 rows of 48 px cells + gaps)."""
    from gradleak.jobs.outputs import snapshot_images

    truth = torch.zeros(8, 1, 1, 8, 8)
    (image,) = snapshot_images(truth, [torch.ones(8, 1, 1, 8, 8)])
    assert image.shape == (4 * 50 + 2, 4 * 50 + 2, 3)
    rows = [image[2 + 50 * r + 24, 2 + 24, 0] for r in range(4)]  # the first cell's centre per row
    assert rows == [0, 255, 0, 255]  # truth (black), reconstruction (white), truth, reconstruction
