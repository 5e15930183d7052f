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
