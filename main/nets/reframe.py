"""Carry a trained DiffAE decoder over to a learned transform (LT plugin) with a longer window at the same hop.

The U-Net sees the audio as LT frames. A frame of the longer transform covers the shorter one's samples (both are
centred on the same sample: the plugin pads half a window less half a hop), and its Fourier frame is invertible on
them, so each short frame is an exact linear function of the long frame with the same index. The U-Net's first
layer is mapped through that function, and its output layer through the inverse one (a short frame's synthesis
is a long frame's synthesis of a zero-padded pattern), so the carried-over decoder starts as the trained one.

The one part that cannot be mapped exactly is the outer skip's per-channel scale (a different scale for every
frequency bin and noise level); each long bin takes the scale of the short bins it draws on.
"""

from __future__ import annotations

import torch
from audio_diffusion_pytorch import DiffusionAE
from torch import Tensor, nn

from main.nets.fourier import learned_transform


def _unet(diffae: DiffusionAE) -> nn.Module:
    """The outermost block of the decoder's U-Net: input conv, skip scale and output conv are its members."""
    return diffae.net.blocks[2].blocks[2].net


def _first_and_last_convs(diffae: DiffusionAE) -> tuple[nn.Conv1d, nn.Conv1d, nn.Linear]:
    """The U-Net's input conv (frames -> features), output conv (features -> frames) and skip-scale linear."""
    block = _unet(diffae)
    return block.block.blocks[0].block, block.block.blocks[-1].block[1], block.skip.blocks[0][1]


def _frame_maps(short: DiffusionAE, long: DiffusionAE) -> tuple[Tensor, Tensor]:
    """(to_short [C * Fs, C * Fl], to_long [C * Fl, C * Fs]): a long frame's coefficients -> the short frame's
    analysis of the same samples, and a short frame's synthesis pattern -> the long coefficients that synthesise
    it (in float64)."""
    short_analysis, short_synthesis = (t.weight.detach().double() for t in learned_transform(short))
    long_analysis, long_synthesis = (t.weight.detach().double() for t in learned_transform(long))
    channels = short_analysis.shape[1]
    if long_analysis.shape[1] != channels:
        raise ValueError(f"the DiffAEs have {channels} and {long_analysis.shape[1]} audio channels")
    short_window, long_window = short_analysis.shape[-1], long_analysis.shape[-1]
    offset = (long_window - short_window) // 2  # both frames are centred on the same sample
    fs, fl = short_analysis.shape[0] // channels, long_analysis.shape[0] // channels
    to_short = torch.zeros(channels * fs, channels * fl, dtype=torch.float64)
    to_long = torch.zeros(channels * fl, channels * fs, dtype=torch.float64)
    for c in range(channels):
        rows = slice(c * fl, (c + 1) * fl)
        # long frame c: coefficients = analysis @ samples; samples = inverse(analysis) @ coefficients
        samples_from_long = torch.linalg.inv(long_analysis[rows, c])[offset:offset + short_window]
        to_short[:, rows] = torch.einsum("ow,wl->ol", short_analysis[:, c], samples_from_long)
        # long synthesis of coefficients k writes synthesis[k]^T k on the long window; solve for the padded pattern
        pattern = torch.zeros(long_window, channels * fs, dtype=torch.float64)
        pattern[offset:offset + short_window] = short_synthesis[:, c].T
        to_long[rows] = torch.linalg.solve(long_synthesis[rows, c].T, pattern)
    return to_short, to_long


@torch.no_grad()
def reframe_decoder_(long: DiffusionAE, short: DiffusionAE) -> None:
    """Load `short`'s weights into `long` (same architecture but a longer, square LT window at the same hop): the
    encoder and U-Net are copied, the U-Net's first and last layers mapped to `long`'s frames, `long`'s LT kept."""
    (s_in, s_out, s_scale), (l_in, l_out, l_scale) = _first_and_last_convs(short), _first_and_last_convs(long)
    if long.net.blocks[0].stride != short.net.blocks[0].stride:
        raise ValueError("re-framing keeps the LT hop: the DiffAEs have LT strides "
                         f"{short.net.blocks[0].stride[0]} and {long.net.blocks[0].stride[0]}")
    short_lt, long_lt = learned_transform(short)[0], learned_transform(long)[0]
    square = long_lt.out_channels == long_lt.kernel_size[0] * long_lt.in_channels  # invertible frames
    if long_lt.kernel_size[0] <= short_lt.kernel_size[0] or not square:
        raise ValueError("re-framing goes to a longer LT window with as many filters as samples (got window "
                         f"{short_lt.kernel_size[0]} -> {long_lt.kernel_size[0]}, "
                         f"{long_lt.out_channels // long_lt.in_channels} filters)")
    to_short, to_long = _frame_maps(short, long)
    mapped = {id(p) for m in (l_in, l_out, l_scale, *learned_transform(long)) for p in m.parameters()}
    long_params, long_buffers = dict(long.named_parameters()), dict(long.named_buffers())
    for name, tensor in [*short.named_parameters(), *short.named_buffers()]:
        target = long_params.get(name, long_buffers.get(name))
        if target is None or id(target) in mapped:
            continue
        if target.shape != tensor.shape:
            raise ValueError(f"re-framing needs the same architecture apart from the LT window: {name} is "
                             f"{tuple(tensor.shape)} in the source and {tuple(target.shape)} here")
        target.copy_(tensor)
    l_in.weight.copy_(torch.einsum("fs...,sl->fl...", s_in.weight.double(), to_short).float())
    l_in.bias.copy_(s_in.bias)
    l_out.weight.copy_(torch.einsum("ls,sf...->lf...", to_long, s_out.weight.double()).float())
    l_out.bias.copy_((to_long @ s_out.bias.double()).float())
    share = to_long.abs() / to_long.abs().sum(1, keepdim=True).clamp_min(1e-12)  # each long bin's short sources
    l_scale.weight.copy_((share @ s_scale.weight.double()).float())
    l_scale.bias.copy_((share @ s_scale.bias.double()).float())
