"""The seed's architecture hyper-parameters (DIFFAE_CONFIG, DIFFGEN_CONFIG) and how overrides merge into them."""

from __future__ import annotations

import copy
from typing import Any, Mapping

# ------------------------------------------------------------------ seed architecture defaults (begin)
# The seed's DiffAE: magnitude-spectrogram encoder, tanh bottleneck, 64x compression, LT U-Net decoder.
DIFFAE_CONFIG: dict[str, Any] = dict(
    in_channels=2,
    channels=[256, 512, 512, 512, 1024, 1024, 1024],
    factors=[1, 2, 2, 2, 2, 2, 2],
    items=[1, 2, 2, 2, 2, 2, 2],
    lt_num_filters=128,
    lt_window_length=64,
    lt_stride=64,
    encoder_channels=512,
    encoder_multipliers=[1, 1, 1],
    encoder_factors=[2, 2],
    encoder_num_blocks=[4, 8],
    stft_num_fft=1023,
    stft_hop_length=256,
    latent_channels=32,
    inject_depth=4,
    lt_init="random",  # or "fourier": start the learned transform as a sine-windowed DFT (see init_lt_fourier_)
    # The decoder diffuses audio * data_scale and decoding divides by it. Quiet audio (bird recordings sit near
    # -20 dBFS RMS) under unit noise spends most noise levels where no signal is visible; a scale that brings the
    # clips to ~0.5 RMS trains the decoder where it matters (BENCHMARKS.md, "Decoder data scale").
    data_scale=1.0,
)

# The seed's DiffGen: text-conditional latent U-Net with cross-attention on t5-base embeddings and CFG.
DIFFGEN_CONFIG: dict[str, Any] = dict(
    in_channels=32,
    channels=[128, 256, 512, 512, 1024, 1024],
    factors=[1, 2, 2, 2, 2, 2],
    items=[2, 2, 2, 4, 8, 8],
    attentions=[0, 0, 1, 1, 1, 1],
    cross_attentions=[1, 1, 1, 1, 1, 1],
    attention_heads=12,
    attention_features=64,
    embedding_max_length=128,
    embedding_features=768,
    # "mask": cross-attention ignores the text's padding tokens (this repository); "attend": they are attended
    # to, as in the original bird-diffusion code (set automatically for its weights, see main.compat).
    text_padding="mask",
)
# ------------------------------------------------------------------ seed architecture defaults (end)


def merged_config(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `defaults` with `overrides` applied; a key `defaults` lacks is an error naming the valid keys."""
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"unknown model config keys {sorted(unknown)}; valid keys: {sorted(defaults)}")
    return {**copy.deepcopy(dict(defaults)), **dict(overrides)}
