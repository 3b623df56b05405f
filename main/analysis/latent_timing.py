"""Rhythm measured in latent space: how long the syllables and the gaps between them last in DiffAE latents.

The latent species probe (`latent_species.py`) reads which code a latent holds, not when: a generated latent of
the right species whose syllables are three times too short or too long passes it, and decodes to a sound that
BirdNET does not recognise (on the demo, real latents stretched 1.5x in time dropped from 0.75 to 0.25 kNN top-1;
BENCHMARKS.md). This module segments latents into active (syllable) and background blocks and compares the
durations of generated latents with those of real recordings of the same species.

A block of `POOL_FRAMES` frames is active when its root-mean-square distance to the DiffAE's *background latent*
(the latent of a silent input) is above a threshold set from the real latents (a quarter of their 95th-percentile
distance, see THRESHOLD_FRACTION). Runs shorter than `MIN_BLOCKS` are jitter and merged into their neighbours;
only runs with a neighbour on both sides count (a clip's first and last run are cut by the clip edges).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import Tensor

from main.analysis.latent_species import POOL_FRAMES

# A block is active above this fraction of the real latents' 95th-percentile distance to the background. On the
# demo's nearly binary latents one channel of 16 flipped is 0.25 of it: 0.5 missed the high pipes' syllables.
THRESHOLD_FRACTION = 0.25
# Runs shorter than this many blocks (40 ms at 500 frames/s) are jitter. Real validation latents against the
# training recordings' then differ by 0.16 (syllables) / 0.30 (gaps); with 3 blocks by 0.36 / 0.50.
MIN_BLOCKS = 5


def background_latent(diffae: Any, samples: int, device: str = "cpu") -> Tensor:
    """The DiffAE's latent [channels] of `samples` of silence (averaged over frames)."""
    silence = torch.zeros(1, int(diffae.in_channels), samples, device=device)
    with torch.no_grad():
        return diffae.encode(silence)[0].float().mean(-1).cpu()


def block_distances(latent: Tensor, background: Tensor, pool_frames: int = POOL_FRAMES) -> Tensor:
    """RMS distance over channels between the `pool_frames`-frame averages of `latent` [channels, frames] and
    `background` [channels]; one value per whole block."""
    if latent.ndim != 2 or background.shape != latent.shape[:1]:
        raise ValueError(f"expected latent [channels, frames] and background [channels], got "
                         f"{tuple(latent.shape)} and {tuple(background.shape)}")
    blocks = latent.shape[-1] // pool_frames
    pooled = latent[:, :blocks * pool_frames].float().reshape(latent.shape[0], blocks, pool_frames).mean(-1)
    return (pooled - background.float()[:, None]).pow(2).mean(0).sqrt()


def activity_threshold(latents: Sequence[Tensor], background: Tensor, pool_frames: int = POOL_FRAMES,
                       fraction: float = THRESHOLD_FRACTION) -> float:
    """`fraction` of the 95th percentile of the real latents' block distances to the background."""
    distances = torch.cat([block_distances(z, background, pool_frames) for z in latents])
    if distances.numel() == 0:
        raise ValueError("no latent is long enough for one block")
    return fraction * float(torch.quantile(distances, 0.95))


def run_durations(active: Sequence[bool], min_blocks: int = MIN_BLOCKS) -> tuple[list[int], list[int]]:
    """Lengths in blocks of the interior active and inactive runs of `active`, after runs shorter than
    `min_blocks` are merged into their neighbours."""
    runs: list[list[int]] = []
    for value in (int(a) for a in active):
        if runs and runs[-1][0] == value:
            runs[-1][1] += 1
        else:
            runs.append([value, 1])
    merged = True
    while merged:  # the shortest interior run goes first, so a long run is never swallowed by a short one
        merged = False
        interior = [(runs[i][1], i) for i in range(1, len(runs) - 1) if runs[i][1] < min_blocks]
        if interior:
            _, i = min(interior)
            runs[i - 1][1] += runs[i][1] + runs[i + 1][1]
            del runs[i:i + 2]
            merged = True
    inner = runs[1:-1]
    return [n for value, n in inner if value == 1], [n for value, n in inner if value == 0]


def durations(latents: Sequence[Tensor], background: Tensor, threshold: float, frame_rate: float,
              pool_frames: int = POOL_FRAMES, min_blocks: int = MIN_BLOCKS) -> tuple[list[float], list[float]]:
    """Syllable and gap durations in seconds over `latents` ([channels, frames] each)."""
    syllables: list[float] = []
    gaps: list[float] = []
    seconds_per_block = pool_frames / frame_rate
    for latent in latents:
        active = (block_distances(latent, background, pool_frames) > threshold).tolist()
        on, off = run_durations(active, min_blocks)
        syllables += [n * seconds_per_block for n in on]
        gaps += [n * seconds_per_block for n in off]
    return syllables, gaps


def _quartiles(values: Sequence[float]) -> list[float] | None:
    if not values:
        return None
    return [round(float(q), 4) for q in torch.quantile(torch.tensor(values, dtype=torch.float64),
                                                         torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))]


def log2_distance(generated: Sequence[float], real: Sequence[float]) -> float:
    """1-D Wasserstein distance between the log2 durations of two samples (1.0: off by a factor of 2 on
    average); nan when either is empty."""
    if not generated or not real:
        return float("nan")
    grid = torch.linspace(0.005, 0.995, 100, dtype=torch.float64)
    a = torch.quantile(torch.tensor(generated, dtype=torch.float64).log2(), grid)
    b = torch.quantile(torch.tensor(real, dtype=torch.float64).log2(), grid)
    return float((a - b).abs().mean())


def compare_timing(generated: Sequence[Tensor], generated_species: Sequence[str], real: Sequence[Tensor],
                   real_species: Sequence[str], background: Tensor, frame_rate: float,
                   pool_frames: int = POOL_FRAMES, min_blocks: int = MIN_BLOCKS) -> dict[str, Any]:
    """Per species: quartiles of syllable and gap durations (s) of generated and real latents and their log2
    Wasserstein distance; `syllable_distance` / `gap_distance`: the mean over species with syllables in both."""
    if len(generated) != len(generated_species) or len(real) != len(real_species):
        raise ValueError("one species name per latent")
    threshold = activity_threshold(real, background, pool_frames)
    per_species: dict[str, Any] = {}
    for name in sorted(set(generated_species)):
        gen = [z for z, s in zip(generated, generated_species) if s == name]
        ref = [z for z, s in zip(real, real_species) if s == name]
        gen_on, gen_off = durations(gen, background, threshold, frame_rate, pool_frames, min_blocks)
        ref_on, ref_off = durations(ref, background, threshold, frame_rate, pool_frames, min_blocks)
        per_species[name] = {
            "syllable_s": {"generated": _quartiles(gen_on), "real": _quartiles(ref_on)},
            "gap_s": {"generated": _quartiles(gen_off), "real": _quartiles(ref_off)},
            "syllables_per_clip": {"generated": len(gen_on) / max(len(gen), 1), "real": len(ref_on) / max(len(ref), 1)},
            "syllable_distance": log2_distance(gen_on, ref_on),
            "gap_distance": log2_distance(gen_off, ref_off),
        }

    def mean_of(key: str) -> float:
        values = [v[key] for v in per_species.values() if not math.isnan(v[key])]
        return sum(values) / len(values) if values else float("nan")

    return {"syllable_distance": mean_of("syllable_distance"), "gap_distance": mean_of("gap_distance"),
            "threshold": threshold, "pool_frames": pool_frames, "min_blocks": min_blocks, "frame_rate": frame_rate,
            "per_species": per_species}

