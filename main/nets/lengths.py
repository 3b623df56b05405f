"""The length rules: audio samples per latent frame and the lengths the U-Nets can take."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from main.nets import defaults


def diffae_downsample_factor(config: Mapping[str, Any]) -> int:
    """Audio samples per latent frame of a DiffAE config (1024 for the seed)."""
    c = defaults.merged_config(defaults.DIFFAE_CONFIG, config)
    factor = c["stft_hop_length"]
    for f in c["encoder_factors"]:
        factor *= f
    return factor


def unet_length_multiple(factors: Sequence[int], stride: int = 1) -> int:
    """The length a U-Net input must be divisible by: the product of its down-sampling factors (and LT stride)."""
    multiple = stride
    for f in factors:
        multiple *= f
    return multiple


def diffae_audio_multiple(config: Mapping[str, Any]) -> int:
    """The one length rule: audio a DiffAE of `config` encodes and decodes is a multiple of this (its U-Net's
    down-sampling incl. the LT stride, and its encoder's samples per latent frame)."""
    c = defaults.merged_config(defaults.DIFFAE_CONFIG, config)
    return math.lcm(unet_length_multiple(c["factors"], c["lt_stride"]), diffae_downsample_factor(c))


def diffgen_length_multiple(config: Mapping[str, Any]) -> int:
    """The latent length a DiffGen of `config` takes must be a multiple of this (its patch size x U-Net factors)."""
    c = defaults.merged_config(defaults.DIFFGEN_CONFIG, config)
    return int(c["patch_size"]) * unet_length_multiple(c["factors"])
