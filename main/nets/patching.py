"""Frame patching for DiffGen: the U-Net sees `patch_size` neighbouring latent frames folded into its channels."""

from __future__ import annotations

from typing import Any, Callable

from torch import Tensor, nn


def fold_frames(x: Tensor, patch_size: int) -> Tensor:
    """[batch, channels, frames] -> [batch, channels * patch_size, frames / patch_size] (frame-major in channels)."""
    batch, channels, frames = x.shape
    if frames % patch_size:
        raise ValueError(f"{frames} latent frames are not a multiple of the DiffGen patch_size {patch_size}")
    return x.reshape(batch, channels, frames // patch_size, patch_size).permute(0, 1, 3, 2).reshape(
        batch, channels * patch_size, frames // patch_size)


def unfold_frames(x: Tensor, patch_size: int) -> Tensor:
    """The inverse of `fold_frames`."""
    batch, folded, frames = x.shape
    return x.reshape(batch, folded // patch_size, patch_size, frames).permute(0, 1, 3, 2).reshape(
        batch, folded // patch_size, frames * patch_size)


class FramePatchedNet(nn.Module):
    """Wraps a U-Net so that it works on frames folded into channels and returns the original layout.

    A latent with more frames per second than the U-Net needs (the 32 kHz demo DiffAE's 500 frames/s) can be
    processed at half the cost without a learned down-sampling: unlike a stride-2 first level, every output frame
    still gets its own values from the U-Net, so the generated latents stay as smooth as real ones.
    """

    def __init__(self, net_t: Callable[..., nn.Module], patch_size: int, in_channels: int, **kwargs: Any):
        super().__init__()
        if patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {patch_size}")
        self.patch_size = patch_size
        self.net = net_t(in_channels=in_channels * patch_size, **kwargs)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        """The wrapped U-Net's output for `x` [batch, channels, frames], in `x`'s layout."""
        return unfold_frames(self.net(fold_frames(x, self.patch_size), *args, **kwargs), self.patch_size)
