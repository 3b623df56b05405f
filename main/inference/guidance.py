"""Classifier-free guidance (conditional and unconditional batched) and latent generation with DiffGen."""

from __future__ import annotations

from typing import Callable

import torch
from audio_diffusion_pytorch import DiffusionModel
from torch import Tensor

from main.diffusion import sample as run_sampler
from main.nets.conditioning import (cfg_unconditional_embedding, diffgen_velocity, text_padding_mode,
                                    unconditional_inputs)

# The conditioning helpers live with the networks (training uses them too) and stay importable from here.
__all__ = ["cfg_unconditional_embedding", "diffgen_velocity", "generate_latent", "guided_velocity_fn",
           "text_padding_mode", "unconditional_inputs"]


def guided_velocity_fn(diffgen: DiffusionModel, embedding: Tensor, mask: Tensor,
                       scale: float) -> Callable[[Tensor, Tensor], Tensor]:
    """Velocity with classifier-free guidance; conditional and unconditional run as one batched forward."""
    if scale == 1.0:
        def velocity(x: Tensor, sigmas: Tensor) -> Tensor:
            return diffgen_velocity(diffgen, x, sigmas, embedding, mask)
    else:
        uncond_embedding, uncond_mask = unconditional_inputs(diffgen, embedding.shape[0], embedding.shape[1])
        both_embedding = torch.cat([embedding, uncond_embedding.to(embedding.dtype)])
        both_mask = torch.cat([mask, uncond_mask])

        def velocity(x: Tensor, sigmas: Tensor) -> Tensor:
            v = diffgen_velocity(diffgen, torch.cat([x, x]), torch.cat([sigmas, sigmas]), both_embedding,
                                 both_mask)
            v_cond, v_uncond = v.chunk(2)
            return v_uncond + (v_cond - v_uncond) * scale

    return velocity


def generate_latent(
    diffgen: DiffusionModel,
    embedding: Tensor,
    mask: Tensor,
    noise: Tensor,
    num_steps: int,
    embedding_scale: float,
    sampler: str = "ddim",
    show_progress: bool = False,
    sigma_start: float = 1.0,
) -> Tensor:
    """Denoise `noise` [batch, channels, frames] into DiffAE latents for the text embeddings (CFG batched).
    `noise` is at noise level `sigma_start`: 1 is pure noise; below 1 it is a latent noised that far, as an
    audio-to-audio variation starts."""
    velocity = guided_velocity_fn(diffgen, embedding, mask, embedding_scale)
    return run_sampler(velocity, noise, num_steps, sampler, show_progress, sigma_start=sigma_start)
