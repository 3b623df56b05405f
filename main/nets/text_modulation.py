"""Pooled-text modulation for DiffGen: the masked mean of the text embedding joins the U-Net's time features."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from main.attention import MaskState


def masked_mean(embedding: Tensor, mask: Optional[Tensor]) -> Tensor:
    """The mean over tokens of `embedding` [batch, tokens, features] where `mask` [batch, tokens] is True (all
    tokens when it is None)."""
    if mask is None:
        return embedding.mean(dim=1)
    weights = mask.to(embedding.dtype).unsqueeze(-1)
    return (embedding * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class PooledTextModulation(nn.Module):
    """Wraps a time-conditioned a-unet U-Net so that a projection of the pooled text embedding is added to the
    modulation features every resnet block receives (as Imagen adds pooled text to the time embedding).

    Cross-attention lets each frame look up the prompt's tokens; this is the global path that tells every block
    what the prompt is about from the first step. The projection's last layer starts at zero, so an untrained
    wrapper computes exactly the wrapped U-Net. The text's padding mask is read from the model's `MaskState`
    (`main.attention`), the one cross-attention uses; the CFG 'no text' embedding is pooled like any other.
    """

    def __init__(self, net_t: Callable[..., nn.Module], embedding_features: int, modulation_features: int = 1024,
                 **kwargs: Any):
        super().__init__()
        self.net = net_t(embedding_features=embedding_features, modulation_features=modulation_features, **kwargs)
        self.to_features = nn.Sequential(nn.Linear(embedding_features, modulation_features), nn.GELU(),
                                         nn.Linear(modulation_features, modulation_features))
        nn.init.zeros_(self.to_features[-1].weight)
        nn.init.zeros_(self.to_features[-1].bias)
        self.mask_state: Optional[MaskState] = None  # set by build_diffgen once the attention is masked

    def forward(self, x: Tensor, *args: Any, embedding: Tensor, **kwargs: Any) -> Tensor:
        """The wrapped U-Net's output, its modulation features shifted by the pooled `embedding`."""
        mask = self.mask_state.mask if self.mask_state is not None else None
        features = self.to_features(masked_mean(embedding, mask))
        if "features" in kwargs:
            features = features + kwargs.pop("features")
        return self.net(x, *args, embedding=embedding, features=features, **kwargs)
