"""Latent rhythm: syllable and gap durations of latents, and the distance between generated and real ones."""

from __future__ import annotations

import math

import pytest
import torch

from main.analysis.latent_timing import (
    block_distances,
    compare_timing,
    log2_distance,
    run_durations,
)

BACKGROUND = torch.tensor([-1.0, 1.0, -1.0, 1.0])
SYLLABLE = torch.tensor([1.0, 1.0, 1.0, -1.0])


def song(syllable_frames: int, gap_frames: int, frames: int = 1200, offset: int = 30, jitter: float = 0.0,
         seed: int = 0) -> torch.Tensor:
    """A latent [4, frames] that switches between the background and one syllable code (binary, like the demo's)."""
    generator = torch.Generator().manual_seed(seed)
    latent = BACKGROUND[:, None].repeat(1, frames)
    start = offset
    while start < frames:
        latent[:, start:start + syllable_frames] = SYLLABLE[:, None]
        start += syllable_frames + gap_frames
    return latent + jitter * torch.randn(latent.shape, generator=generator)


def test_run_durations_merges_jitter_and_drops_edge_runs():
    active = [0] * 5 + [1] * 10 + [0] + [1] * 6 + [0] * 8 + [1] * 2 + [0] * 4 + [1] * 7
    # the 1-block dip inside the first syllable and the 2-block blip in the second gap are jitter
    assert run_durations(active, min_blocks=3) == ([17], [14])
    assert run_durations(active, min_blocks=1) == ([10, 6, 2], [1, 8, 4])
    assert run_durations([1] * 9) == ([], [])


def test_block_distances_are_rms_over_channels_of_block_means():
    latent = torch.stack([torch.tensor([1.0, 3.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 4.0])])
    distances = block_distances(latent, torch.zeros(2), pool_frames=2)
    torch.testing.assert_close(distances, torch.tensor([math.sqrt(4 / 2), math.sqrt(4 / 2)]))
    with pytest.raises(ValueError, match="channels, frames"):
        block_distances(latent[None], torch.zeros(2))


def test_log2_distance_reads_a_factor_of_two_as_one():
    assert log2_distance([0.1, 0.2, 0.3], [0.1, 0.2, 0.3]) == pytest.approx(0.0)
    assert log2_distance([0.2, 0.4, 0.6], [0.1, 0.2, 0.3]) == pytest.approx(1.0)
    assert math.isnan(log2_distance([], [0.1]))


def test_compare_timing_finds_stretched_syllables_and_ignores_jitter():
    frame_rate = 500.0
    real = [song(40, 24, offset=10 + 7 * i) for i in range(4)]
    same_rhythm = [song(40, 24, offset=13 + 5 * i, jitter=0.3, seed=i) for i in range(4)]
    stretched = [song(80, 48, offset=13 + 5 * i, jitter=0.3, seed=i) for i in range(4)]
    species = ["Alpha avis"] * 4
    result = compare_timing(same_rhythm + stretched, species + ["Beta avis"] * 4, real + real,
                            species + ["Beta avis"] * 4, BACKGROUND, frame_rate)
    alpha, beta = result["per_species"]["Alpha avis"], result["per_species"]["Beta avis"]
    # 40 frames at 500 frames/s = 80 ms syllables, 48 ms gaps; in 4-frame blocks (8 ms)
    assert alpha["syllable_s"]["real"][1] == pytest.approx(0.08, abs=0.009)
    assert alpha["gap_s"]["real"][1] == pytest.approx(0.048, abs=0.009)
    assert alpha["syllable_distance"] < 0.1 and alpha["gap_distance"] < 0.2
    assert beta["syllable_distance"] == pytest.approx(1.0, abs=0.1)
    assert beta["gap_distance"] == pytest.approx(1.0, abs=0.15)
    assert beta["syllable_s"]["generated"][1] == pytest.approx(0.16, abs=0.009)  # within one 8-ms block
    assert result["syllable_distance"] == pytest.approx((alpha["syllable_distance"] + beta["syllable_distance"]) / 2)
    with pytest.raises(ValueError, match="one species name per latent"):
        compare_timing(real, species[:2], real, species, BACKGROUND, frame_rate)
