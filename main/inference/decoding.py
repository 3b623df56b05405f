"""DiffAE decoding: latent -> audio by diffusion conditioned on the latent."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from audio_diffusion_pytorch import DiffusionAE
from torch import Tensor

from main.audio import limit_peak
from main.diffusion import row_noise
from main.diffusion import sample as run_sampler
from main.nets.bottleneck import latent_bounds
from main.nets.conditioning import diffae_data_scale

# latent_bounds and diffae_data_scale live with the networks (training uses them too) and stay importable here.
__all__ = ["DECODING_SIGMA_POWER", "OUTPUT_PEAK", "decode_latent", "decoding_noise", "diffae_data_scale",
           "latent_bounds"]

# The decoding schedule's power (main.diffusion.sigma_schedule): 2 puts more of the steps at low noise levels.
# On the demo DiffAE's reconstructions (12 DPM-Solver++ steps) it lowered the noise floor between syllables from
# +7.8 (linear) to +3.8 dB above the real recordings' at the same cost (N = 20; f72229a, 2026-12-06;
# BENCHMARKS.md, "Sound fidelity").
DECODING_SIGMA_POWER = 2.0
# Decoded audio is scaled down, clip by clip, to peak at most here (real recordings are normalised below full scale;
# a decoder's overshoot would otherwise be clipped when written).
OUTPUT_PEAK = 0.95


def decode_latent(
    diffae: DiffusionAE,
    latent: Tensor,
    num_steps: int,
    sampler: str = "ddim",
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
    noise: Optional[Tensor] = None,
    generators: Optional[Sequence[Optional[torch.Generator]]] = None,
    sigma_power: float = DECODING_SIGMA_POWER,
    peak: Optional[float] = OUTPUT_PEAK,
) -> Tensor:
    """Decode latents [batch, channels, frames] into audio by diffusion conditioned on the latent.

    The audio has `frames * latent_factor` samples (the library's `decode` rounds that to the closest power of
    two, which only fits the U-Net when it is one already; both agree on power-of-two latent lengths). Latents
    are first clamped to the range the encoder's bottleneck produces (a generated latent can overshoot it).
    With `generators`, row i draws its starting noise (unless `noise` is given) from `generators[i]`, so a clip's
    audio does not depend on its batch; else it is one draw for the batch from `generator` (torch's global RNG
    when None). The sampler runs
    on the schedule of power `sigma_power`; each clip is then scaled down to peak at most `peak` (None: as decoded).
    Every entry point (CombinedSampler, `main.sample`, the web UI, `main.analysis`, training previews) decodes
    here, so all of them write the same audio.
    """
    bounds = latent_bounds(diffae)
    if bounds is not None:
        latent = latent.clamp(*bounds)
    if noise is None:
        noise = decoding_noise(diffae, latent, generator, generators)
    channels = [None] * diffae.inject_depth + [latent]
    audio = run_sampler(lambda x, s: diffae.net(x, s, channels=channels), noise, num_steps, sampler, show_progress,
                        sigma_power=sigma_power)
    audio = audio / diffae_data_scale(diffae)
    return audio if peak is None else limit_peak(audio, peak)


def decoding_noise(diffae: DiffusionAE, latent: Tensor, generator: Optional[torch.Generator] = None,
                   generators: Optional[Sequence[Optional[torch.Generator]]] = None) -> Tensor:
    """The starting noise for decoding `latent` [batch, channels, frames], audio-length: row i drawn from
    `generators[i]` (per clip, `main.diffusion.row_noise`) when given, else one draw for the batch from `generator`."""
    shape = (diffae.in_channels, latent.shape[2] * diffae.latent_factor)
    if generators is not None:
        return row_noise(generators, shape, latent.device, latent.dtype)
    return torch.randn((latent.shape[0], *shape), device=latent.device, dtype=latent.dtype, generator=generator)
