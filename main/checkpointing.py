"""Checkpoint safety: atomic writes, no non-finite weights, and RNG state so a resumed run continues exactly."""

from __future__ import annotations

import errno
import io
import random
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from main.faults import maybe_stall_checkpoint_write
from main.files import atomic_path


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); the previous file at the path is intact."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint to a temporary file, fsyncs it and renames it over the target.

    A run killed while saving leaves the previous checkpoint intact (at worst a stray `.tmp` file).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        """Serialise `checkpoint` and atomically replace `path` with it."""
        if "://" in str(path):  # remote file systems: Lightning's fsspec transaction
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)  # serialise first: a failure here leaves no file at all
        try:
            with atomic_path(path, durable=True) as tmp:
                tmp.write_bytes(buffer.getbuffer())
                maybe_stall_checkpoint_write(path)  # test hook (main.faults): a kill between write and rename
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise CheckpointWriteError(error.errno, disk_full_message(path, buffer.getbuffer().nbytes)) from error


def disk_full_message(path: Any, needed: int) -> str:
    """What to tell the user when a checkpoint of `needed` bytes does not fit on the disk holding `path`."""
    folder = Path(path).parent
    try:
        free = f"{shutil.disk_usage(folder).free / 1e6:.1f} MB free"
    except OSError as error:
        free = f"free space unknown ({error})"
    return (f"no space left on the device to write checkpoint {path}: it needs {needed / 1e6:.1f} MB, {free} "
            f"in {folder}; the previous checkpoint at that path is intact. Free some space (old step=*.ckpt "
            "files, callbacks.checkpoint.save_top_k) and resume from it")


def non_finite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of floating-point tensors in `state` that hold NaN or inf."""
    return [
        name
        for name, value in state.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


def collect_rng_states() -> dict[str, Any]:
    """The global RNG states (torch, CUDA, numpy, python) in a form `torch.load(weights_only=True)` accepts."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    """Set the global RNGs from `collect_rng_states()` output."""
    torch.set_rng_state(states["torch"])
    n = states["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def gather_from_ranks(value: Any) -> list[Any]:
    """Every rank's `value`, indexed by rank (a collective under DDP: all ranks must call it)."""
    if not _distributed():
        return [value]
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def this_rank() -> int:
    """This process's DDP rank (0 without DDP)."""
    return torch.distributed.get_rank() if _distributed() else 0


def collect_rank_rng_states() -> list[dict[str, Any]]:
    """Every rank's `collect_rng_states()`, indexed by rank (a collective under DDP: all ranks must call it)."""
    return gather_from_ranks(collect_rng_states())


def restore_rank_rng_states(states: list[Mapping[str, Any]]) -> bool:
    """Restore this rank's entry of `collect_rank_rng_states()` output; False (nothing changed) when the world
    size differs from the one the states were saved with."""
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if _distributed() else (0, 1)
    if len(states) != world:
        return False
    restore_rng_states(states[rank])
    return True


@contextmanager
def rng_neutral() -> Iterator[None]:
    """Run the block without changing the global RNG streams (torch, CUDA, numpy, python): work on the side of
    training (previews, probes) must not shift the training's random numbers, or a resumed run would differ."""
    states = collect_rng_states()
    try:
        yield
    finally:
        restore_rng_states(states)
