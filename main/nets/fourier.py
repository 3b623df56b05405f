"""Fourier initialisation of the DiffAE's learned transform (LT plugin)."""

from __future__ import annotations

import math

import torch
from audio_diffusion_pytorch import DiffusionAE
from torch import Tensor


def fourier_frame(window_length: int) -> Tensor:
    """[window_length, window_length] filters: an orthonormal real DFT basis times a sine window, a tight frame
    (perfect reconstruction by overlap-add of the same filters) at hop window_length / 2."""
    n = torch.arange(window_length, dtype=torch.float64)
    rows = [torch.full_like(n, window_length ** -0.5)]
    for k in range(1, window_length // 2):
        angle = 2 * math.pi * k * n / window_length
        rows += [math.sqrt(2 / window_length) * torch.cos(angle), math.sqrt(2 / window_length) * torch.sin(angle)]
    rows.append(torch.cos(math.pi * n) * window_length ** -0.5)
    window = torch.sin(math.pi * (n + 0.5) / window_length)
    return (torch.stack(rows) * window).float()


@torch.no_grad()
def init_lt_fourier_(diffae: DiffusionAE, num_filters: int, window_length: int, stride: int) -> None:
    """Start the LT plugin's learned transform (its analysis conv and synthesis transposed conv) as a windowed
    DFT of each audio channel. From random filters a tone above a few kHz looks like fast, aliased change between
    frames and the U-Net learns it last; in a DFT frame every frequency is a slowly varying channel."""
    if num_filters != window_length or stride * 2 != window_length or window_length % 2:
        raise ValueError("model.lt_init=fourier needs lt_num_filters == lt_window_length == 2 * lt_stride (got "
                         f"{num_filters}, {window_length}, {stride})")
    analysis, synthesis = diffae.net.blocks[0], diffae.net.blocks[1]
    frame = fourier_frame(window_length)
    for weight in (analysis.weight, synthesis.weight):  # [channels * filters, channels, window] for both
        weight.zero_()
        for channel in range(weight.shape[1]):
            weight[channel * num_filters:(channel + 1) * num_filters, channel] = frame
