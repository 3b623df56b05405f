"""Where inference runs."""

from __future__ import annotations

import argparse
from typing import Optional, Union

import torch


def resolve_device(device: Optional[Union[str, torch.device]] = None) -> str:
    """'auto'/None -> 'cuda' when a GPU is available, else 'cpu'; anything else is used as given."""
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def batches_models(device: Union[str, torch.device], batched: Optional[bool] = None) -> bool:
    """Whether clips run through the models together: `batched` when given, else on CUDA only (one at a time on a
    CPU, where it costs little and keeps every clip's audio bit-identical whatever it is generated with)."""
    return bool(batched) if batched is not None else torch.device(device).type == "cuda"


def add_batching(parser: argparse.ArgumentParser) -> None:
    """--batched / --serial (`batched` in the parsed arguments; None: `batches_models`' default)."""
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--batched", dest="batched", action="store_true", default=None,
                      help="run each step's clips through the models together (the default on CUDA): much faster "
                           "on a GPU; each clip keeps its own seed and matches the serial audio to float rounding")
    mode.add_argument("--serial", dest="batched", action="store_false",
                      help="one clip at a time (the default on CPU): every clip bit-identical at any batch size")
