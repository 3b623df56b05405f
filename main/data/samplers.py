"""Epoch-seeded training samplers yielding ``(index, epoch)`` pairs.

Persistent DataLoader workers keep a stale copy of the dataset, so the epoch travels with each index
instead of through `set_epoch` on the dataset. Until `set_epoch` is first called the samplers advance their
epoch by one per pass; after it, a pass uses the epoch set, however often it is iterated (torchdata's
StatefulDataLoader iterates a DDP-wrapped sampler twice when it fast-forwards a resumed pass).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from typing import Iterator, Optional, Sequence

import torch
from torch.utils.data import Sampler


class _EpochSampler(Sampler[tuple[int, int]], ABC):
    """The epoch bookkeeping both samplers share; subclasses draw one pass's indices from a seeded generator."""

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)
        self.epoch = 0
        self.epoch_set = False

    def set_epoch(self, epoch: int) -> None:
        """Use `epoch` for the next passes (no more advancing on its own)."""
        self.epoch = int(epoch)
        self.epoch_set = True

    @abstractmethod
    def _indices(self, generator: torch.Generator) -> list[int]:
        """One pass's dataset indices, drawn from `generator` (seeded by seed + epoch)."""

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Indices of one pass; the epoch then advances by one unless set_epoch was ever called."""
        epoch = self.epoch
        self.epoch += 0 if self.epoch_set else 1
        for index in self._indices(torch.Generator().manual_seed(self.seed + epoch)):
            yield index, epoch


class EpochShuffleSampler(_EpochSampler):
    """A permutation seeded by (seed + epoch), yielding (index, epoch); `set_epoch` picks the epoch."""

    def __init__(self, num_items: int, seed: int = 0) -> None:
        super().__init__(seed)
        self.num_items = int(num_items)

    def __len__(self) -> int:
        """Items per pass."""
        return self.num_items

    def _indices(self, generator: torch.Generator) -> list[int]:
        return torch.randperm(self.num_items, generator=generator).tolist()


class EpochWeightedSampler(_EpochSampler):
    """Weighted sampling with replacement seeded by (seed + epoch), yielding (index, epoch)."""

    def __init__(self, weights: Sequence[float], num_samples: Optional[int] = None, seed: int = 0) -> None:
        super().__init__(seed)
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        w = self.weights
        if w.ndim != 1 or len(w) == 0 or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("weights must be a non-empty 1-D sequence of non-negative numbers with a positive sum")
        self.num_samples = len(self.weights) if num_samples is None else int(num_samples)

    def __len__(self) -> int:
        """Samples per pass."""
        return self.num_samples

    def _indices(self, generator: torch.Generator) -> list[int]:
        return torch.multinomial(self.weights, self.num_samples, True, generator=generator).tolist()


def stratified_weights(species: Sequence[str]) -> list[float]:
    """The seed's sampling weights: 1 / (count of the row's species * number of species)."""
    counts = Counter(species)
    return [1.0 / (counts[name] * len(counts)) for name in species]


def select_per_species(sci_names: Sequence[str], per_species: int, max_species: Optional[int] = None,
                       seed: int = 0) -> list[int]:
    """Indices of up to `per_species` items of each species (seeded choice), for the `max_species` most frequent
    species (all when None; ties broken by name), in species order."""
    if per_species < 1:
        raise ValueError(f"per_species must be >= 1, got {per_species}")
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(sci_names):
        groups.setdefault(str(name), []).append(i)
    names = sorted(groups, key=lambda n: (-len(groups[n]), n))
    if max_species is not None:
        names = names[:max_species]
    generator = torch.Generator().manual_seed(int(seed))
    chosen: list[int] = []
    for name in sorted(names):
        members = groups[name]
        order = torch.randperm(len(members), generator=generator).tolist()
        chosen += sorted(members[j] for j in order[:per_species])
    return chosen
