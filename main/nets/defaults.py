"""The seed's architecture hyper-parameters (DIFFAE_CONFIG, DIFFGEN_CONFIG) and how overrides merge into them."""

from __future__ import annotations

import copy
from typing import Any, Mapping

from main.conf import load_arch_yaml

# The seed's architectures, read from the config groups the experiments compose (one source of truth).
DIFFAE_CONFIG: dict[str, Any] = load_arch_yaml("diffae_arch", "seed")  # main/conf/diffae_arch/seed.yaml
DIFFGEN_CONFIG: dict[str, Any] = load_arch_yaml("diffgen_arch", "seed")  # main/conf/diffgen_arch/seed.yaml


def merged_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `defaults` with `overrides` applied; a key `defaults` lacks is an error naming the valid keys."""
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"unknown model config keys {sorted(unknown)}; valid keys: {sorted(defaults)}")
    return {**copy.deepcopy(dict(defaults)), **dict(overrides)}
