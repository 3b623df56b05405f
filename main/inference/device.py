"""Where inference runs."""

from __future__ import annotations

from typing import Optional, Union

import torch


def resolve_device(device: Optional[Union[str, torch.device]] = None) -> str:
    """'auto'/None -> 'cuda' when a GPU is available, else 'cpu'; anything else is used as given."""
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)
