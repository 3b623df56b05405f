"""The DiffAE's latent bottleneck: how saturated its tanh is, and rescaling the encoder's output so it is not.

A TanhBottleneck whose input is large (the demo DiffAE's encoder outputs |x| ~ 20-90) emits a binary code: every
value is +-1, and whatever the encoder computed below the saturation (the demo's pitch: linear R^2 0.93-0.98
before the tanh, 0.02-0.15 after) never reaches the decoder. Once saturated, tanh passes no gradient back to the
encoder, so training does not leave that state by itself (BENCHMARKS.md, "The saturated bottleneck").
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from audio_encoders_pytorch import TanhBottleneck
from torch import Tensor, nn

SATURATION_MARGIN = 0.05  # within 5% of the half-range of a bound counts as saturated (|z| >= 0.95 for tanh)


def latent_bounds(diffae: nn.Module) -> Optional[tuple[float, float]]:
    """The range of the latents the DiffAE's encoder produces ((-1, 1) behind a TanhBottleneck), None if unbounded.

    The decoder only ever saw latents in that range; DiffGen samples (with CFG above all) overshoot it, e.g.
    |latent| up to 3 at CFG 3 in the demo, where real latents are tanh-saturated at +-1.
    """
    bottlenecks = getattr(getattr(diffae, "encoder", None), "bottlenecks", None) or []
    return (-1.0, 1.0) if any(isinstance(b, TanhBottleneck) for b in bottlenecks) else None


def latent_saturation(diffae: nn.Module, latent: Tensor) -> Optional[float]:
    """Fraction of latent values at the bottleneck's bounds (None for an unbounded bottleneck)."""
    bounds = latent_bounds(diffae)
    if bounds is None:
        return None
    low, high = bounds
    margin = SATURATION_MARGIN * (high - low) / 2
    return float(((latent <= low + margin) | (latent >= high - margin)).float().mean())


def bottleneck_excess(pre_bottleneck_values: Tensor, limit: float) -> Tensor:
    """Mean squared excess of the bottleneck's input over +-`limit` (0 where |x| <= limit): a penalty that keeps a
    tanh out of saturation (tanh(1.5) = 0.905) while leaving the code free inside the limit."""
    return (pre_bottleneck_values.abs() - limit).clamp(min=0).square().mean()


def encode_with_pre_bottleneck(diffae: nn.Module, audio: Tensor) -> tuple[Tensor, Tensor]:
    """The latent and the encoder's output before its bottleneck(s), both [batch, latent channels, frames]."""
    latent, info = diffae.encoder(audio, with_info=True)
    return latent, info["xs"][-1]


@torch.no_grad()
def pre_bottleneck(diffae: nn.Module, audio: Tensor) -> Tensor:
    """The encoder's output before its bottleneck(s) [batch, latent channels, frames]."""
    return encode_with_pre_bottleneck(diffae, audio)[1]


@torch.no_grad()
def rescale_pre_bottleneck_(diffae: nn.Module, audio_batches: Iterable[Tensor], target_std: float = 0.5) -> Tensor:
    """Scale the encoder's last (1x1) convolution per channel so that the bottleneck's input has standard deviation
    `target_std` over `audio_batches` (the signs, hence the code the decoder knows, are kept); returns the scale."""
    if not target_std > 0:
        raise ValueError(f"target_std must be > 0, got {target_std!r}")
    to_out = getattr(diffae.encoder, "to_out", None)
    if not isinstance(to_out, nn.Conv1d):
        raise TypeError(f"the encoder's output layer is {type(to_out).__name__}, not the Conv1d this rescales")
    values = torch.cat([pre_bottleneck(diffae, audio).transpose(1, 2).flatten(0, 1) for audio in audio_batches])
    std = values.std(0)
    if not bool((std > 0).all()):
        raise ValueError("a latent channel is constant over the audio given: no scale can be measured")
    scale = target_std / std
    to_out.weight.mul_(scale[:, None, None].to(to_out.weight.dtype))
    if to_out.bias is not None:
        to_out.bias.mul_(scale.to(to_out.bias.dtype))
    return scale
