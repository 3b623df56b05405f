"""The training losses that are not a model's own method: DiffGen's text-conditional loss with CFG masking."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from main.diffusion import v_diffusion_loss
from main.nets.conditioning import diffgen_velocity, unconditional_inputs


def text_conditional_loss(
    model: nn.Module, latent: Tensor, embedding: Tensor, mask: Tensor, cfg_mask_proba: float,
) -> Tensor:
    """DiffGen's loss on DiffAE latents: each item's text is swapped for the CFG 'no text' embedding with
    `cfg_mask_proba`."""
    if cfg_mask_proba > 0:
        drop = torch.rand(latent.shape[0], device=latent.device) < cfg_mask_proba
        uncond_embedding, uncond_mask = unconditional_inputs(model, latent.shape[0], embedding.shape[1])
        embedding = torch.where(drop[:, None, None], uncond_embedding.to(embedding.dtype), embedding)
        mask = torch.where(drop[:, None], uncond_mask, mask)
    return v_diffusion_loss(lambda x, s: diffgen_velocity(model, x, s, embedding, mask), latent)
