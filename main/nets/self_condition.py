"""Self-conditioning for DiffGen (Chen et al., "Analog Bits", 2022): the U-Net also sees its own previous estimate of
the clean latent.

The demo DiffAE's latent is a nearly binary code (BENCHMARKS.md), the case self-conditioning was proposed for: at
every sampling step the network can keep the syllable boundaries it has already committed to instead of
re-deciding them from the noisy input alone.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from main.diffusion import clean_estimate

# (x_noisy, sigmas, estimate or None, rows or None) -> velocity; `rows` selects the batch rows to compute
VelocityWithEstimate = Callable[[Tensor, Tensor, Optional[Tensor], Optional[Tensor]], Tensor]


class SelfConditionedNet(nn.Module):
    """Wraps a U-Net so that its input is [x, estimate of the clean x] (twice the channels, output as x's); without
    an estimate it sees zeros, which is also how an untrained-for-it first pass runs."""

    def __init__(self, net_t: Callable[..., nn.Module], in_channels: int, **kwargs: Any):
        super().__init__()
        self.net = net_t(in_channels=2 * in_channels, out_channels=in_channels, **kwargs)

    def forward(self, x: Tensor, *args: Any, self_condition: Optional[Tensor] = None, **kwargs: Any) -> Tensor:
        """The wrapped U-Net's output for `x` [batch, channels, frames] and the estimate (zeros when None)."""
        estimate = torch.zeros_like(x) if self_condition is None else self_condition.to(x.dtype)
        return self.net(torch.cat([x, estimate], dim=1), *args, **kwargs)


def self_conditioned_training_fn(velocity: VelocityWithEstimate, proba: float = 0.5):
    """A `velocity_fn(x_noisy, sigmas)` for `v_diffusion_loss`: for a random `proba` of the rows a first pass
    without gradients estimates the clean sample, which the trained pass then sees (the others see zeros)."""
    if not 0.0 <= proba <= 1.0:
        raise ValueError(f"self-conditioning probability must be in [0, 1], got {proba}")

    def velocity_fn(x_noisy: Tensor, sigmas: Tensor) -> Tensor:
        rows = torch.rand(x_noisy.shape[0], device=x_noisy.device) < proba
        estimate = torch.zeros_like(x_noisy)
        if bool(rows.any()):
            picked, picked_sigmas = x_noisy[rows], sigmas[rows]
            with torch.no_grad():
                first = velocity(picked, picked_sigmas, None, rows)
                estimate[rows] = clean_estimate(picked, picked_sigmas, first)
        return velocity(x_noisy, sigmas, estimate, None)

    return velocity_fn


class SelfConditionedSampling:
    """A sampler's `velocity_fn` that feeds each step the clean estimate of the step before (zeros at the first);
    one instance per generation, as it keeps that estimate."""

    def __init__(self, velocity: Callable[[Tensor, Tensor, Optional[Tensor]], Tensor]):
        self.velocity = velocity
        self.estimate: Optional[Tensor] = None

    def __call__(self, x_noisy: Tensor, sigmas: Tensor) -> Tensor:
        v = self.velocity(x_noisy, sigmas, self.estimate)
        self.estimate = clean_estimate(x_noisy, sigmas, v)
        return v
