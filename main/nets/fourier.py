"""Fourier initialisation of the DiffAE's learned transform (LT plugin)."""

from __future__ import annotations

import math
from typing import Optional

import torch
from audio_diffusion_pytorch import DiffusionAE
from torch import Tensor, nn


def fourier_frame(window_length: int, stride: Optional[int] = None) -> Tensor:
    """[window_length, window_length] filters: an orthonormal real DFT basis times a window, a tight frame (perfect
    reconstruction by overlap-add of the same filters) at hop `stride` (default window_length / 2).

    At hop window_length / 2 the window is a sine; at a third of it or less it is a Hann window, whose
    side lobes fall fast: a frame coefficient that is off then adds sound within one bin of its frequency only,
    not copies at +- rate / stride (measured in BENCHMARKS.md, "Sound fidelity")."""
    stride = stride or window_length // 2
    n = torch.arange(window_length, dtype=torch.float64)
    rows = [torch.full_like(n, window_length ** -0.5)]
    for k in range(1, window_length // 2):
        angle = 2 * math.pi * k * n / window_length
        rows += [math.sqrt(2 / window_length) * torch.cos(angle), math.sqrt(2 / window_length) * torch.sin(angle)]
    rows.append(torch.cos(math.pi * n) * window_length ** -0.5)
    sine = torch.sin(math.pi * (n + 0.5) / window_length)
    window = sine if window_length == 2 * stride else sine ** 2
    overlap = window.reshape(window_length // stride, stride).pow(2).sum(0)  # the same at every sample of a hop
    return (torch.stack(rows) * window / overlap.sqrt().mean()).float()


def learned_transform(diffae: DiffusionAE) -> tuple[nn.Module, nn.Module]:
    """The LT plugin's analysis conv and synthesis transposed conv (audio <-> frames around the decoder's U-Net)."""
    return diffae.net.blocks[0], diffae.net.blocks[1]


@torch.no_grad()
def init_lt_fourier_(diffae: DiffusionAE, num_filters: int, window_length: int, stride: int) -> None:
    """Start the LT plugin's learned transform (its analysis conv and synthesis transposed conv) as a windowed
    DFT of each audio channel. From random filters a tone above a few kHz looks like fast, aliased change between
    frames and the U-Net learns it last; in a DFT frame every frequency is a slowly varying channel.

    lt_window_length == 2 * lt_stride is the seed's 2x overlap; 4 * lt_stride gives each frame a window twice as
    long (half the bin spacing) at the same frame rate."""
    if num_filters != window_length or window_length % 2 or window_length % stride or window_length < 2 * stride:
        raise ValueError("model.lt_init=fourier needs lt_num_filters == lt_window_length, an even number and a "
                         f"multiple of lt_stride, at least twice it (got {num_filters}, {window_length}, {stride})")
    analysis, synthesis = learned_transform(diffae)
    frame = fourier_frame(window_length, stride)
    for weight in (analysis.weight, synthesis.weight):  # [channels * filters, channels, window] for both
        weight.zero_()
        for channel in range(weight.shape[1]):
            weight[channel * num_filters:(channel + 1) * num_filters, channel] = frame
