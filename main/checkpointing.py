"""Checkpoint safety: atomic writes, no non-finite weights, and RNG state so a resumed run continues exactly."""

from __future__ import annotations

import io
import random
from contextlib import contextmanager
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from main.files import atomic_path


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
        with atomic_path(path, durable=True) as tmp:
            tmp.write_bytes(buffer.getbuffer())


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


@contextmanager
def rng_neutral() -> Iterator[None]:
    """Run the block without changing the global RNG streams (torch, CUDA, numpy, python): work on the side of
    training (previews, probes) must not shift the training's random numbers, or a resumed run would differ."""
    states = collect_rng_states()
    try:
        yield
    finally:
        restore_rng_states(states)
