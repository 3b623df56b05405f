"""Checkpoints and weight files of the original bird-diffusion code (github.com/Max-Wurthmann/audiodiffusion).

`main.nets.original` (below this package: the networks read the original's files through it) loads them
without unpickling and recognises their layouts; `layout` maps the original's training checkpoints onto this
repository's (no model building); `migrate` loads, resumes and converts them (`python -m main.compat
inspect|convert ...`). The migration names load on first use, so that importing this package stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from main.compat.layout import EMA_BUFFERS, KEPT_PREFIXES, Migration, convert_training_checkpoint
from main.nets.original import (ORIGINAL_EMA_UPDATE_EVERY, ORIGINAL_SAMPLE_RATE, ORIGINAL_TEXT_ENCODER,
                                OriginalLayoutError, checkpoint_layout, layout_kind, model_weights, original_config,
                                read_checkpoint)

MIGRATION_NAMES = ("migrate_if_original", "OriginalResume", "load_original_weights", "adapt_config_for_original",
                   "resume_from_original", "convert_file", "main")


def __getattr__(name: str) -> Any:
    """The migration functions (main.compat.migrate), imported when first asked for."""
    if name in MIGRATION_NAMES:
        return getattr(importlib.import_module("main.compat.migrate"), name)
    raise AttributeError(f"module 'main.compat' has no attribute {name!r}")
