"""Text adherence measured where the text acts: a species classifier on DiffAE latents.

DiffGen turns text into DiffAE latents; whether a generated latent belongs to the prompted species can be told
before any audio is decoded. `LatentSpeciesClassifier` is fitted on the latents of real training recordings
(pooled statistics per latent channel: mean, standard deviation and mean absolute frame-to-frame change of the
latent averaged over `POOL_FRAMES` frames, standardised) and scores generated latents. It is cheap enough to run
inside training (`main.callbacks.LatentSpeciesCallback` logs `valid/latent_species_top1`) and is part of every
evaluation (`python -m main.analysis generate` writes `latent_species.json` next to the clips).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from main.data.samplers import select_per_species  # noqa: F401 (the probe's item choice, kept importable here)

METHODS = ("ridge", "centroid")
# The statistics are taken on the latent averaged over blocks of this many frames (8 ms at the 500 frames/s of a
# 32 kHz DiffAE). Frame-level jitter the decoder does not render, e.g. between the frames a DiffGen with
# patch_size 4 predicts together, then does not decide the species: on the demo, raw-frame statistics scored
# patch_size-4 latents at 0.47 and patch_size-2 latents at 0.82 although both decode to the same audio accuracy
# (0.71, N = 100); over 4 frames they score 0.96 and 0.99, real latents 1.00 either way (BENCHMARKS.md).
POOL_FRAMES = 4


def pooled_latent_features(latent: Tensor, pool_frames: int = 1) -> Tensor:
    """[batch, channels, frames] -> [batch, 3 * channels]: per-channel mean, standard deviation and mean absolute
    difference between neighbouring frames (how fast the channel changes), of the latent averaged over blocks of
    `pool_frames` frames (a last partial block is dropped; latents shorter than a block are used as they are)."""
    if latent.ndim != 3:
        raise ValueError(f"expected latents [batch, channels, frames], got shape {tuple(latent.shape)}")
    if pool_frames < 1:
        raise ValueError(f"pool_frames must be >= 1, got {pool_frames}")
    latent = latent.float()
    if pool_frames > 1 and latent.shape[-1] >= pool_frames:
        latent = torch.nn.functional.avg_pool1d(latent, pool_frames, pool_frames)
    change = (latent[..., 1:] - latent[..., :-1]).abs().mean(-1) if latent.shape[-1] > 1 else latent[..., 0] * 0
    return torch.cat([latent.mean(-1), latent.std(-1, unbiased=False), change], dim=1)


def wilson_interval(successes: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of a proportion successes / total; (0, 1) when total is 0."""
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class LatentSpeciesClassifier:
    """Species from pooled latent statistics: a ridge-regression (one-vs-rest) linear probe or nearest centroid."""

    species: list[str]
    mean: Tensor
    scale: Tensor
    weights: Tensor  # ridge: [features + 1, species]; centroid: [species, features]
    method: str = "ridge"
    pool_frames: int = 1  # classifiers saved before pooling have none

    @classmethod
    def fit(cls, latents: Tensor, species: Sequence[str], method: str = "ridge",
            ridge: float = 1.0, pool_frames: int = POOL_FRAMES) -> "LatentSpeciesClassifier":
        """Fit on real latents [N, C, T] (or pooled features [N, F]) labelled with `species`."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
        features = latents if latents.ndim == 2 else pooled_latent_features(latents, pool_frames)
        if len(species) != features.shape[0]:
            raise ValueError(f"{features.shape[0]} latents but {len(species)} species labels")
        names = sorted(set(species))
        if len(names) < 2:
            raise ValueError(f"a species classifier needs at least 2 species, got {names}")
        features = features.double()
        mean = features.mean(0)
        scale = features.std(0, unbiased=False).clamp_min(1e-6)
        x = (features - mean) / scale
        index = torch.tensor([names.index(s) for s in species])
        if method == "centroid":
            weights = torch.stack([x[index == i].mean(0) for i in range(len(names))])
        else:
            x1 = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
            target = torch.nn.functional.one_hot(index, len(names)).double()
            gram = x1.T @ x1 + ridge * torch.eye(x1.shape[1], dtype=x.dtype)
            weights = torch.linalg.solve(gram, x1.T @ target)
        return cls(names, mean.float(), scale.float(), weights.float(), method, pool_frames)

    def scores(self, latents: Tensor) -> Tensor:
        """Class scores [N, species] (higher = more likely) of latents [N, C, T] or features [N, F]."""
        features = latents if latents.ndim == 2 else pooled_latent_features(latents, self.pool_frames)
        x = (features.float().cpu() - self.mean) / self.scale
        if self.method == "centroid":
            return -torch.cdist(x, self.weights)
        return torch.cat([x, torch.ones(x.shape[0], 1)], dim=1) @ self.weights

    def predict(self, latents: Tensor) -> list[str]:
        """The most likely species of each latent."""
        return [self.species[i] for i in self.scores(latents).argmax(1).tolist()]

    def evaluate(self, latents: Tensor, species: Sequence[str]) -> dict[str, Any]:
        """Top-1 accuracy against `species` with its 95% Wilson interval, per-species accuracy and predictions."""
        predicted = self.predict(latents)
        if len(predicted) != len(species):
            raise ValueError(f"{len(predicted)} latents but {len(species)} species labels")
        correct = [p == s for p, s in zip(predicted, species)]
        low, high = wilson_interval(sum(correct), len(correct))
        per_species: dict[str, list[int]] = {}
        for s, ok in zip(species, correct):
            per_species.setdefault(str(s), []).append(int(ok))
        return {
            "accuracy": sum(correct) / len(correct) if correct else float("nan"),
            "ci95": [low, high],
            "n": len(correct),
            "n_species": len(self.species),
            "chance": 1.0 / len(self.species),
            "method": self.method,
            "per_species": {s: sum(v) / len(v) for s, v in sorted(per_species.items())},
            "predicted": predicted,
        }

    def state_dict(self) -> dict[str, Any]:
        """A plain description (tensors and names) that `from_state_dict` restores."""
        return {"species": list(self.species), "mean": self.mean, "scale": self.scale, "weights": self.weights,
                "method": self.method, "pool_frames": self.pool_frames}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "LatentSpeciesClassifier":
        """Inverse of `state_dict`."""
        return cls(list(state["species"]), state["mean"], state["scale"], state["weights"], str(state["method"]),
                   int(state.get("pool_frames", 1)))


def synthetic_species_probe(diffae: Any, per_species: int = 3, seconds: float = 3.072, sample_rate: int = 32000,
                            channels: int = 2, seed: int = 2000) -> tuple[LatentSpeciesClassifier, Tensor]:
    """A probe fitted on the DiffAE latents [N, C, T] of fresh recordings (`per_species` of each synthetic species,
    recording i of species s drawn from seed `seed + 10 s + i`), and those latents."""
    from main.data.synthetic import SPECIES, synthesize_recording

    audio = np.stack([synthesize_recording(s, np.random.default_rng(seed + 10 * s + i), seconds, sample_rate,
                                           channels).T
                      for s in range(len(SPECIES)) for i in range(per_species)]).astype(np.float32)
    with torch.no_grad():
        latents = diffae.encode(torch.from_numpy(audio))
    species = [s.sci_name for s in SPECIES for _ in range(per_species)]
    return LatentSpeciesClassifier.fit(latents, species), latents
