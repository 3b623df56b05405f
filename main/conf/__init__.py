"""The project's Hydra config groups (on Hydra's search path as pkg://main.conf) and a loader for them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parent


def load_group_yaml(group: str, name: str, inherit: bool = True) -> dict[str, Any]:
    """The keys of `main/conf/<group>/<name>.yaml` without Hydra: with `inherit`, merged over the same group's
    files its `defaults` list names (e.g. `diffae_arch/tiny` over `diffae_arch/seed`, top-level keys); else its own."""
    data = yaml.safe_load((CONF_DIR / group / f"{name}.yaml").read_text()) or {}
    entries = data.pop("defaults", None) or []
    if not inherit:
        return data
    merged: dict[str, Any] = {}
    for entry in entries if "_self_" in entries else [*entries, "_self_"]:  # Hydra's order: _self_ last unless named
        if entry == "_self_":
            merged.update(data)
        elif isinstance(entry, str):
            merged.update(load_group_yaml(group, entry))
        else:
            raise ValueError(f"{group}/{name}.yaml: only same-group names and _self_ are supported in defaults")
    return merged


def load_arch_yaml(group: str, name: str) -> dict[str, Any]:
    """A full architecture from `main/conf/<group>/<name>.yaml` ('diffae_arch' or 'diffgen_arch'), seed included."""
    return load_group_yaml(group, name)
