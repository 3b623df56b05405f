"""Training loaders that resume mid-epoch: torchdata's `StatefulDataLoader`, saved at the batch the loop consumed.

Lightning saves and restores any train loader with `state_dict`/`load_state_dict` (its fit loop's
``combined_loader`` entry), so a run resumed from a mid-epoch checkpoint continues the epoch's data order
instead of restarting it. Details that make this exact:

- The saved state counts the batches the training loop consumed, not what the workers pre-loaded: torchdata
  snapshots the state per *yielded* batch, and Lightning's fetcher does not fetch ahead of a loader with a
  length (`_PrefetchDataFetcher`: "ignored when the length is available"; ours always have one).
- `iter()` does not start the pass: the first batch does. Lightning calls `iter()` on a resumed run before it
  calls `set_epoch` on the sampler (and on its DDP wrapper); workers started then would pre-load the indices of
  the wrong epoch.
- A checkpoint written after the epoch's last batch holds an empty state (`ResumableDataLoader.state_dict`),
  so the resumed run starts the next epoch with a fresh pass instead of fast-forwarding through a spent one.
- A DataLoader iterator draws its workers' base seed from the global torch RNG unless it has a generator of its
  own; `loader_generator` gives each loader one, so creating an iterator (which a resumed run does at a point
  where the uninterrupted run does not) leaves the training's random numbers alone.

The samplers (`main.data.samplers`) are not stateful: the loader fast-forwards them by the number of indices
already drawn, which is exact because a pass depends only on (seed, epoch), and the workers' crops only on
(seed, epoch, index).
"""

from __future__ import annotations

import warnings
from typing import Any, Iterator, Optional

import torch
from torchdata.stateful_dataloader import StatefulDataLoader

from main.errors import ConfigError

# torchdata 0.11 calls torch.set_vital, deprecated in newer torch: noise in every run, harmless.
warnings.filterwarnings("ignore", message="'set_vital' is deprecated")


_SETTINGS = "resumable_settings"  # what the saved position depends on, checked when it is loaded


def loader_generator(seed: int) -> torch.Generator:
    """A private generator for a DataLoader's worker base seeds, so iterators never draw from the global RNG."""
    return torch.Generator().manual_seed(int(seed))


class _DeferredPass:
    """The iterator `ResumableDataLoader.__iter__` returns: it starts the loader's pass at the first `next()`."""

    def __init__(self, loader: "ResumableDataLoader") -> None:
        self.loader = loader
        self.inner: Optional[Iterator[Any]] = None

    def __iter__(self) -> "_DeferredPass":
        return self

    def __next__(self) -> Any:
        if self.inner is None:
            self.inner = self.loader._start_pass()
        return next(self.inner)


class ResumableDataLoader(StatefulDataLoader):
    """A `StatefulDataLoader` that starts a pass at its first batch and whose state after a complete pass is
    empty, so resuming from it starts a new pass (see the module docstring)."""

    _pending: Optional[_DeferredPass] = None

    def __iter__(self) -> Iterator[Any]:
        """A pass that starts (workers, sampler) when its first batch is requested."""
        self._pending = _DeferredPass(self)
        return self._pending

    def _start_pass(self) -> Iterator[Any]:
        return super().__iter__()

    def state_dict(self) -> dict[str, Any]:
        """The state to resume from: mid-pass, after the batches yielded so far; before or after a pass, {} (or
        the loaded state not used yet)."""
        if self._pending is not None and self._pending.inner is None:
            return dict(self.next_iter_state or {})
        iterator = self._iterator
        if iterator is None or iterator._finished or iterator._num_yielded >= len(self):
            return {}
        return {**super().state_dict(), _SETTINGS: self._settings()}

    def _settings(self) -> dict[str, Any]:
        return {"num_workers": int(self.num_workers), "batch_size": self.batch_size, "batches": len(self)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume the next pass from `state_dict` ({}: a new pass); a ConfigError (one line from train.py) naming the
        setting that changed."""
        self._pending = None
        state = dict(state_dict)
        saved = state.pop(_SETTINGS, None)
        if saved is not None and saved != self._settings():
            now = self._settings()
            changed = ", ".join(f"{k}: {saved[k]} -> {now[k]}" for k in now if saved.get(k) != now[k])
            raise ConfigError(
                f"cannot resume the interrupted epoch: the training loader changed since the checkpoint ({changed}); "
                "resume with the same datamodule.num_workers / datamodule.batch_size (and data set), or from a "
                "checkpoint at an epoch boundary")
        super().load_state_dict(state)
