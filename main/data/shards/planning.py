"""Dealing shards to the (DDP rank, DataLoader worker) slots of an epoch, and how many samples each slot yields.

Per epoch the shards are shuffled with ``seed + epoch`` (training) and dealt to the (rank, worker) slots
by clip count, greedily, so every shard is read by exactly one (rank, DataLoader worker) per epoch. DDP
needs every rank to make the same number of batches, and each DataLoader worker batches its own samples,
so worker ``w`` of every rank yields the same number of samples: the most any rank's worker ``w`` holds
(``uneven="pad"``: the others read their shards again, with new crops) or the least (``uneven="drop"``).
"""

from __future__ import annotations

from typing import Sequence

import torch

UNEVEN_MODES = ("pad", "drop")


def assign_shards(
    counts: Sequence[int], world_size: int, num_workers: int, epoch: int, seed: int = 0, shuffle: bool = True
) -> list[list[list[int]]]:
    """Shard indices for each [rank][worker]: shards in (seed + epoch) order, each to the least-loaded slot.

    Every shard goes to exactly one slot. Slots are visited worker-major (worker 0 of every rank, then
    worker 1, ...), so when shards are equal the leftover ones spread over the ranks of the same worker.
    """
    if world_size < 1 or num_workers < 1:
        raise ValueError(f"world_size and num_workers must be >= 1, got {world_size}, {num_workers}")
    order = list(range(len(counts)))
    if shuffle:
        order = torch.randperm(len(counts), generator=torch.Generator().manual_seed(int(seed) + int(epoch))).tolist()
    slots = world_size * num_workers  # slot s = worker * world_size + rank
    loads = [0] * slots
    assigned: list[list[int]] = [[] for _ in range(slots)]
    for shard in order:
        slot = min(range(slots), key=lambda s: (loads[s], s))
        assigned[slot].append(shard)
        loads[slot] += int(counts[shard])
    return [[assigned[w * world_size + r] for w in range(num_workers)] for r in range(world_size)]


def worker_quotas(
    counts: Sequence[int], assignment: Sequence[Sequence[Sequence[int]]], uneven: str = "pad"
) -> list[int]:
    """Samples every rank's worker w yields: the most (pad) or least (drop) any rank's worker w holds."""
    if uneven not in UNEVEN_MODES:
        raise ValueError(f"uneven must be one of {UNEVEN_MODES}, got {uneven!r}")
    num_workers = len(assignment[0])
    ranks = range(len(assignment))
    loads = [[sum(int(counts[s]) for s in assignment[r][w]) for r in ranks] for w in range(num_workers)]
    pick = max if uneven == "pad" else min
    return [pick(per_rank) for per_rank in loads]
