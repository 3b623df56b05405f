"""Attention for a-unet U-Nets: fused `scaled_dot_product_attention` and a key-padding mask for cross-attention.

a-unet's attention is einsum + softmax and its cross-attention has no mask, so padding tokens of the text
encoder are attended to. `enable_masked_attention` swaps each attention core for an SDPA one that keeps the
same parameters (state-dict keys are unchanged, so seed checkpoints still load) and, for cross-attention,
reads the key-padding mask from a `MaskState` shared by the whole model.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from a_unet.blocks import Attention
from einops import rearrange
from torch import Tensor, nn


class MaskState:
    """Holds the key-padding mask ([batch, tokens], True = attend) of the current forward pass."""

    def __init__(self) -> None:
        self.mask: Optional[Tensor] = None


class SDPAttentionCore(nn.Module):
    """Multi-head attention core on `F.scaled_dot_product_attention`, parameter-compatible with a-unet's."""

    def __init__(self, to_out: nn.Linear, num_heads: int, mask_state: Optional[MaskState] = None):
        super().__init__()
        # a-unet stores the output projection as `blocks.0`; keep that name so state dicts stay compatible.
        self.blocks = nn.ModuleList([to_out])
        self.num_heads = num_heads
        self.mask_state = mask_state

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attend q to k/v, masking padded keys when a cross-attention mask is set."""
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.num_heads) for t in (q, k, v))
        attn_mask = None
        if self.mask_state is not None and self.mask_state.mask is not None:
            mask = self.mask_state.mask
            if mask.shape != (k.shape[0], k.shape[2]):
                raise ValueError(
                    f"embedding mask has shape {tuple(mask.shape)}, expected {(k.shape[0], k.shape[2])}"
                )
            attn_mask = mask[:, None, None, :].to(torch.bool)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.blocks[0](rearrange(out, "b h n d -> b n (h d)"))


def enable_masked_attention(model: nn.Module, num_heads: int) -> MaskState:
    """Replace every a-unet attention core in `model` by an SDPA core; cross-attention gets a shared mask."""
    state = MaskState()
    for module in model.modules():
        if not isinstance(module, Attention):
            continue
        core = module.attention
        if isinstance(core, SDPAttentionCore):
            continue
        module.attention = SDPAttentionCore(core.blocks[0], num_heads, state if module.use_context else None)
    model.embedding_mask_state = state
    return state


@contextmanager
def embedding_mask(model: nn.Module, mask: Optional[Tensor]) -> Iterator[None]:
    """Within the block, cross-attention of `model` ignores keys where `mask` is False."""
    state: Optional[MaskState] = getattr(model, "embedding_mask_state", None)
    if state is None:
        if mask is not None and not bool(mask.all()):
            raise RuntimeError("model has no masked attention; call enable_masked_attention(model) first")
        yield
        return
    previous, state.mask = state.mask, mask
    try:
        yield
    finally:
        state.mask = previous
