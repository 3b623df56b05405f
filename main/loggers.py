"""Logger factories used by the Hydra logger configs."""

from __future__ import annotations

import os
from typing import Any

from pytorch_lightning.loggers import WandbLogger


def wandb_logger(**kwargs: Any) -> WandbLogger:
    """A WandbLogger that runs offline unless WANDB_MODE says otherwise (online, disabled, ...)."""
    mode = os.environ.get("WANDB_MODE", "offline")
    os.environ["WANDB_MODE"] = mode
    return WandbLogger(offline=mode == "offline", **kwargs)
