"""The training losses that are not a model's own method: DiffGen's text-conditional loss with CFG masking."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from main.diffusion import v_diffusion_loss
from main.nets.conditioning import diffgen_velocity, is_self_conditioned, unconditional_inputs
from main.nets.self_condition import self_conditioned_training_fn


def text_conditional_loss(
    model: nn.Module, latent: Tensor, embedding: Tensor, mask: Tensor, cfg_mask_proba: float,
) -> Tensor:
    """DiffGen's loss on DiffAE latents: each item's text is swapped for the CFG 'no text' embedding with
    `cfg_mask_proba`; a self-conditioned model sees its own gradient-free clean estimate for half the items."""
    if cfg_mask_proba > 0:
        drop = torch.rand(latent.shape[0], device=latent.device) < cfg_mask_proba
        uncond_embedding, uncond_mask = unconditional_inputs(model, latent.shape[0], embedding.shape[1])
        embedding = torch.where(drop[:, None, None], uncond_embedding.to(embedding.dtype), embedding)
        mask = torch.where(drop[:, None], uncond_mask, mask)
    if is_self_conditioned(model):
        def velocity(x: Tensor, s: Tensor, estimate: Optional[Tensor], rows: Optional[Tensor]) -> Tensor:
            if rows is None:
                return diffgen_velocity(model, x, s, embedding, mask, estimate)
            return diffgen_velocity(model, x, s, embedding[rows], mask[rows], estimate)

        velocity_fn = self_conditioned_training_fn(velocity)
    else:
        velocity_fn = lambda x, s: diffgen_velocity(model, x, s, embedding, mask)  # noqa: E731
    return v_diffusion_loss(velocity_fn, latent)
