"""How the networks are called: DiffGen's velocity with masked text cross-attention, its classifier-free-guidance
'no text' inputs, and the factor each diffusion scales its data by. Training and generation share these."""

from __future__ import annotations

from typing import Optional

import torch
from audio_diffusion_pytorch import DiffusionModel
from torch import Tensor, nn

from main.attention import embedding_mask


def cfg_unconditional_embedding(diffgen: DiffusionModel) -> nn.Embedding:
    """The learned embedding that replaces the text for classifier-free guidance (a-unet's FixedEmbedding)."""
    embeddings = [m for m in diffgen.modules() if isinstance(m, nn.Embedding)]
    if len(embeddings) != 1:
        raise TypeError(f"expected one CFG embedding in DiffGen, found {len(embeddings)}")
    return embeddings[0]


def diffgen_velocity(
    diffgen: DiffusionModel, x: Tensor, sigmas: Tensor, embedding: Tensor, mask: Optional[Tensor],
) -> Tensor:
    """DiffGen's velocity prediction; the text padding is masked out of cross-attention unless the model was
    trained attending to it (`text_padding: attend`)."""
    if text_padding_mode(diffgen) == "attend":
        mask = None
    with embedding_mask(diffgen, mask):
        return diffgen.net(x, sigmas, embedding=embedding)


def text_padding_mode(diffgen: nn.Module) -> str:
    """How `diffgen` treats text padding ("mask" unless its config says otherwise)."""
    return str(getattr(diffgen, "config", {}).get("text_padding", "mask"))


def unconditional_inputs(diffgen: DiffusionModel, batch_size: int, length: int) -> tuple[Tensor, Tensor]:
    """The CFG 'no text' embedding [batch, length, features] and its all-true mask."""
    table = cfg_unconditional_embedding(diffgen).weight
    embedding = table[:length].unsqueeze(0).expand(batch_size, -1, -1)
    return embedding, torch.ones(batch_size, length, dtype=torch.bool, device=table.device)


def diffae_data_scale(diffae: nn.Module) -> float:
    """The factor between audio and what the DiffAE decoder diffuses (1.0 for models without one)."""
    return float(getattr(diffae, "config", {}).get("data_scale", 1.0))
