"""Fault-injection hooks for the tests in tests/test_faults.py, switched on by environment variables.

Unset (the normal case) they do nothing. They let a test drive the real `train.py` into the faults a long run
meets (a kill at any step, a kill in the middle of a checkpoint write) and record what the training loop
consumed, so the test can prove that a resumed run saw every item exactly once per epoch.

- ``BIRD_FAULT_ITEM_LOG=PATH``: every training batch appends one JSON line to PATH (``PATH.rankN`` on DDP rank
  N > 0): rank, global step, epoch, batch index and the dataset indices the batch was built from.
- ``BIRD_FAULT_KILL_AT_STEP=K``: the process SIGKILLs itself right after optimizer step K (after the
  checkpoint callbacks of that step ran), as a preemption would.
- ``BIRD_FAULT_STALL_CHECKPOINT=N:MARKER``: the N-th checkpoint write of the process (1-based) stops after the
  temporary file is written and before it is renamed over the target; it creates MARKER and sleeps, so the test
  can kill it there.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any, Mapping, Optional

ITEM_LOG = "BIRD_FAULT_ITEM_LOG"
KILL_AT_STEP = "BIRD_FAULT_KILL_AT_STEP"
STALL_CHECKPOINT = "BIRD_FAULT_STALL_CHECKPOINT"

_checkpoint_writes = 0


def _env(name: str) -> Optional[str]:
    value = os.environ.get(name, "").strip()
    return value or None


def log_items(batch: Mapping[str, Any], step: int, epoch: int, batch_idx: int, rank: int) -> None:
    """Append the batch's dataset indices to the item log when ``BIRD_FAULT_ITEM_LOG`` is set."""
    path = _env(ITEM_LOG)
    if path is None:
        return
    items = batch.get("items")
    if items is None:
        raise KeyError(f"{ITEM_LOG} is set but the training batch has no 'items' entry (dataset indices)")
    record = {"rank": rank, "step": step, "epoch": epoch, "batch_idx": batch_idx, "items": [int(i) for i in items]}
    target = Path(path if rank == 0 else f"{path}.rank{rank}")
    with open(target, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def maybe_kill(step: int) -> None:
    """SIGKILL this process when ``BIRD_FAULT_KILL_AT_STEP`` equals `step`."""
    value = _env(KILL_AT_STEP)
    if value is not None and int(value) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_stall_checkpoint_write(path: Any) -> None:
    """Between writing a checkpoint's temporary file and renaming it: stall the N-th write (see module docstring)."""
    global _checkpoint_writes
    _checkpoint_writes += 1
    value = _env(STALL_CHECKPOINT)
    if value is None:
        return
    count, sep, marker = value.partition(":")
    if not sep or not marker:
        raise ValueError(f"{STALL_CHECKPOINT}={value!r}: expected N:MARKER_PATH")
    if _checkpoint_writes == int(count):
        Path(marker).write_text(str(path))
        time.sleep(600)  # the test kills the process here
