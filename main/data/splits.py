"""Seeded, species-stratified, stable train/valid/test split by recording.

Each recording gets a key u = hash(seed, recording id) in [0, 1). Within a species the recordings are
ranked by u and recording r of n sits at position q = (r + o) / n, where o = hash(seed, species) in
[0, 1) is a per-species offset (systematic sampling with a random start, so small species still feed
valid/test with the right expected rate). Position q falls in train for q < f_train, valid for
q < f_train + f_valid, else test. The lowest-u recording of every species is always in train.

Properties: every species with >= 1 recording has >= 1 training recording; a recording id is in one
split only (rows sharing an id share a split); the result depends only on (seed, ids, species), not on
row order; adding recordings to a species only moves that species' recordings near the split
boundaries, other species are untouched. If a split with a positive fraction ends up empty while
another split has several recordings, the recording nearest its boundary is moved there
(deterministically), so small data sets still get a validation set.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Sequence

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.85, 0.10, 0.05)
SPLIT_NAMES: tuple[str, str, str] = ("train", "valid", "test")


def stable_unit(*parts: object) -> float:
    """A deterministic pseudo-random number in [0, 1) from `parts` (blake2b, independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def _check_fractions(fractions: Sequence[float], names: Sequence[str]) -> tuple[float, ...]:
    """Validate and normalise split fractions."""
    if len(fractions) != len(names):
        raise ValueError(f"split fractions {tuple(fractions)} and split names {tuple(names)} differ in length")
    if len(set(names)) != len(names):
        raise ValueError(f"split names must be distinct, got {tuple(names)}")
    if any(f < 0 for f in fractions) or sum(fractions) <= 0 or fractions[0] <= 0:
        raise ValueError(f"split fractions must be >= 0 with a positive first (train) fraction, got {tuple(fractions)}")
    total = float(sum(fractions))
    return tuple(float(f) / total for f in fractions)


def assign_splits(
    ids: Sequence[str],
    species: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    names: Sequence[str] = SPLIT_NAMES,
) -> list[str]:
    """The split name of each row, given its recording id and species (see module docstring)."""
    if len(ids) != len(species):
        raise ValueError(f"got {len(ids)} ids but {len(species)} species")
    fracs = _check_fractions(fractions, names)
    bounds = [sum(fracs[: i + 1]) for i in range(len(fracs))]

    recording_species: dict[str, str] = {}
    for rec_id, sp in zip(ids, species):
        recording_species.setdefault(str(rec_id), str(sp))
    by_species: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for rec_id, sp in recording_species.items():
        by_species[sp].append((stable_unit("rec", seed, rec_id), rec_id))

    assigned: dict[str, int] = {}
    position: dict[str, float] = {}
    for sp, items in by_species.items():
        items.sort()
        offset = stable_unit("species", seed, sp)
        n = len(items)
        for rank, (_, rec_id) in enumerate(items):
            q = (rank + offset) / n
            split = 0 if rank == 0 else next((i for i, b in enumerate(bounds) if q < b), len(bounds) - 1)
            assigned[rec_id] = split
            position[rec_id] = q

    _fill_empty_splits(assigned, position, recording_species, fracs, bounds)
    return [names[assigned[str(rec_id)]] for rec_id in ids]


def _fill_empty_splits(
    assigned: dict[str, int],
    position: dict[str, float],
    recording_species: dict[str, str],
    fracs: Sequence[float],
    bounds: Sequence[float],
) -> None:
    """Move one recording into each empty split that has a positive fraction, keeping train non-empty per species."""
    for split, frac in enumerate(fracs):
        if frac <= 0 or split == 0 or split in assigned.values():
            continue
        per_split: dict[int, int] = defaultdict(int)
        first_train: dict[str, str] = {}
        for rec_id, s in assigned.items():
            per_split[s] += 1
            sp = recording_species[rec_id]
            if s == 0 and (sp not in first_train or position[rec_id] < position[first_train[sp]]):
                first_train[sp] = rec_id
        protected = set(first_train.values())  # each species keeps its first training recording
        lower = bounds[split - 1]
        candidates = [
            (abs(position[rec_id] - lower), rec_id)
            for rec_id, s in assigned.items()
            if per_split[s] >= 2 and rec_id not in protected
        ]
        if candidates:
            assigned[min(candidates)[1]] = split


def split_counts(splits: Sequence[str]) -> dict[str, int]:
    """Number of rows per split name."""
    counts: dict[str, int] = defaultdict(int)
    for name in splits:
        counts[name] += 1
    return dict(counts)
