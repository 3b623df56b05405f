"""V-objective diffusion in audio-diffusion-pytorch's parameterisation: training loss and samplers.

A noise level sigma in [0, 1] maps to alpha = cos(sigma*pi/2), beta = sin(sigma*pi/2);
x_noisy = alpha*x + beta*noise and the network predicts v = alpha*noise - beta*x.
The samplers take a `velocity_fn(x_noisy, sigmas) -> v`, so the same code serves DiffGen (with batched
classifier-free guidance) and DiffAE decoding (conditioned on a latent).
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

VelocityFn = Callable[[Tensor, Tensor], Tensor]
SamplerName = Literal["ddim", "dpmpp-2m"]
SAMPLERS: tuple[str, ...] = ("ddim", "dpmpp-2m")


def alpha_beta(sigmas: Tensor) -> tuple[Tensor, Tensor]:
    """Signal and noise weights for noise levels `sigmas`."""
    angle = sigmas * math.pi / 2
    return torch.cos(angle), torch.sin(angle)


def _expand(values: Tensor, ndim: int) -> Tensor:
    return values.view(*values.shape, *([1] * (ndim - values.ndim)))


def clean_estimate(x_noisy: Tensor, sigmas: Tensor, velocity: Tensor) -> Tensor:
    """The clean sample implied by a v-prediction at noise levels `sigmas` [batch]: alpha * x - beta * v."""
    alphas, betas = alpha_beta(_expand(sigmas, x_noisy.ndim))
    return alphas * x_noisy - betas * velocity


def v_diffusion_loss(velocity_fn: VelocityFn, x: Tensor) -> Tensor:
    """MSE between predicted and true velocity at noise levels drawn uniformly from [0, 1] (the library's, in the
    same RNG order)."""
    return v_diffusion_loss_and_estimate(velocity_fn, x)[0]


def v_diffusion_loss_and_estimate(velocity_fn: VelocityFn, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """`v_diffusion_loss`, with the clean estimates it implies and their noise levels (for a loss on the audio)."""
    sigmas = torch.rand(x.shape[0], device=x.device)
    noise = torch.randn_like(x)
    alphas, betas = alpha_beta(_expand(sigmas, x.ndim))
    x_noisy = alphas * x + betas * noise
    v_target = alphas * noise - betas * x
    velocity = velocity_fn(x_noisy, sigmas)
    return F.mse_loss(velocity, v_target), clean_estimate(x_noisy, sigmas, velocity), sigmas


def rollout_loss_and_estimate(velocity_fn: VelocityFn, x: Tensor, proba: float,
                              sigma_range: tuple[float, float] = (0.005, 0.1)
                              ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`v_diffusion_loss_and_estimate` where a share `proba` of the items starts from the network's own previous
    step instead of from x + noise: such an item's noise level is drawn log-uniformly in `sigma_range`, the item is
    diffused to a higher level s_hi ~ U(sigma, 1), the network (without gradient) estimates the clean sample there,
    and a DDIM step carries that estimate down to sigma. A decoder trained only on x + noise treats what its own
    steps at high levels put in (spectral images, broadband noise) as signal and keeps it (BENCHMARKS.md, "Sound
    fidelity"); these items show it to the network. The v-MSE leaves them out: an estimate from a high level has
    lost the waveform's fine phase, so an MSE to the real x would pull the network to a blurred mean (it did: the
    valid v-loss rose from 0.10 to 0.58 in 1000 steps). Train them with a phase-blind loss on the returned estimate
    (`main.modules.spectral`). Returns the v-MSE over the other items, the estimates and noise levels of all, and
    the mask of the rolled-out items."""
    sigmas = torch.rand(x.shape[0], device=x.device)
    noise = torch.randn_like(x)
    rolled = torch.rand(x.shape[0], device=x.device) < proba
    low, high = math.log(sigma_range[0]), math.log(sigma_range[1])
    sigmas = torch.where(rolled, torch.exp(low + (high - low) * torch.rand(x.shape[0], device=x.device)), sigmas)
    sigmas_hi = sigmas + (1 - sigmas) * torch.rand(x.shape[0], device=x.device)
    alphas, betas = alpha_beta(_expand(sigmas, x.ndim))
    x_noisy = alphas * x + betas * noise
    v_target = alphas * noise - betas * x
    if bool(rolled.any()):  # the whole batch goes through (a conditioned velocity_fn takes the batch it was built on)
        with torch.no_grad():
            alphas_hi, betas_hi = alpha_beta(_expand(sigmas_hi, x.ndim))
            noisy_hi = alphas_hi * x + betas_hi * noise
            estimate_hi = clean_estimate(noisy_hi, sigmas_hi, velocity_fn(noisy_hi, sigmas_hi))
            noise_hi = (noisy_hi - alphas_hi * estimate_hi) / betas_hi
            x_noisy = torch.where(_expand(rolled, x.ndim), alphas * estimate_hi + betas * noise_hi, x_noisy)
    velocity = velocity_fn(x_noisy, sigmas)
    plain = ~rolled
    loss = F.mse_loss(velocity[plain], v_target[plain]) if bool(plain.any()) else velocity.sum() * 0.0
    return loss, clean_estimate(x_noisy, sigmas, velocity), sigmas, rolled


def linear_sigmas(num_steps: int, device: torch.device | str = "cpu", start: float = 1.0) -> Tensor:
    """The library's schedule: num_steps+1 noise levels from `start` (1 = pure noise) down to 0."""
    return torch.linspace(start, 0.0, num_steps + 1, device=device)


def sigma_schedule(num_steps: int, device: torch.device | str = "cpu", start: float = 1.0,
                   power: float = 1.0) -> Tensor:
    """num_steps+1 noise levels start * (1 - i / num_steps) ** power from `start` down to 0: power 1 is the library's
    linear schedule (exactly), power 2 spends more of the steps at low noise levels, where a waveform decoder
    removes the last hiss (BENCHMARKS.md, "Decoding schedule")."""
    if power <= 0:
        raise ValueError(f"the schedule's power must be > 0, got {power}")
    if power == 1.0:
        return linear_sigmas(num_steps, device, start)
    return start * torch.linspace(1.0, 0.0, num_steps + 1, device=device) ** power


def add_noise(x: Tensor, sigma: float, generator: Optional[torch.Generator] = None) -> Tensor:
    """`x` diffused to noise level `sigma` (the starting point of an audio-to-audio variation)."""
    noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
    alpha, beta = alpha_beta(torch.tensor(sigma, dtype=torch.float64))
    return float(alpha) * x + float(beta) * noise


@torch.no_grad()
def sample(
    velocity_fn: VelocityFn,
    noise: Tensor,
    num_steps: int,
    sampler: str = "ddim",
    show_progress: bool = False,
    sigma_start: float = 1.0,
    sigma_power: float = 1.0,
) -> Tensor:
    """Denoise `noise` (at noise level `sigma_start`, 1 = pure noise) to a clean sample in `num_steps` steps, on
    the `sigma_schedule` of power `sigma_power` (1: the library's linear schedule); both samplers, `ddim` and
    `dpmpp-2m`, are deterministic."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if not 0.0 < sigma_start <= 1.0:
        raise ValueError(f"sigma_start must be in (0, 1], got {sigma_start}")
    sigmas = sigma_schedule(num_steps, noise.device, sigma_start, sigma_power)
    step: Callable[..., Tensor] = _ddim_step if sampler == "ddim" else _DpmSolverPP2M()
    x = noise
    for i in tqdm(range(num_steps), disable=not show_progress, desc=f"sampling ({sampler})", leave=False):
        sigma_batch = sigmas[i].expand(x.shape[0])
        v_pred = velocity_fn(x, sigma_batch)
        x = step(x, v_pred, sigmas[i], sigmas[i + 1], is_last=i == num_steps - 1)
    return x


def _ddim_step(x: Tensor, v_pred: Tensor, sigma: Tensor, sigma_next: Tensor, is_last: bool) -> Tensor:
    """Deterministic DDIM update, identical to audio-diffusion-pytorch's `VSampler`."""
    alpha, beta = alpha_beta(sigma)
    alpha_next, beta_next = alpha_beta(sigma_next)
    x_pred = alpha * x - beta * v_pred
    noise_pred = beta * x + alpha * v_pred
    return alpha_next * x_pred + beta_next * noise_pred


def _step_weights(sigma: Tensor, sigma_next: Tensor) -> tuple[float, float, float, float]:
    """alpha, beta at `sigma` and at `sigma_next`, computed in float64."""
    alpha, beta = (float(t) for t in alpha_beta(sigma.double()))
    alpha_next, beta_next = (float(t) for t in alpha_beta(sigma_next.double()))
    return alpha, beta, alpha_next, beta_next


def row_noise(generators: Sequence[Optional[torch.Generator]], shape: Sequence[int],
              device: torch.device | str = "cpu", dtype: Optional[torch.dtype] = None) -> Tensor:
    """Standard normal noise [len(generators), *shape], row i drawn from `generators[i]`: a clip's noise does not
    depend on the batch it is drawn in."""
    return torch.stack([torch.randn(tuple(shape), device=device, dtype=dtype, generator=g) for g in generators])


class _DpmSolverPP2M:
    """DPM-Solver++(2M) (Lu et al. 2022) on the data prediction x0 = alpha*x - beta*v, first order at both ends."""

    def __init__(self) -> None:
        self.previous_x0: Optional[Tensor] = None
        self.previous_h: Optional[float] = None

    def __call__(self, x: Tensor, v_pred: Tensor, sigma: Tensor, sigma_next: Tensor, is_last: bool) -> Tensor:
        alpha, beta, alpha_next, beta_next = _step_weights(sigma, sigma_next)
        x0 = alpha * x - beta * v_pred
        if beta_next == 0.0:
            return x0
        # exp(-h) with h = lambda_next - lambda, lambda = log(alpha/beta); alpha = 0 at sigma = 1 gives h = inf.
        exp_neg_h = (alpha * beta_next) / (beta * alpha_next)
        h = -math.log(exp_neg_h) if exp_neg_h > 0 else math.inf
        if self.previous_x0 is None or is_last or not math.isfinite(self.previous_h or math.inf):
            denoised = x0
        else:
            r = self.previous_h / h
            denoised = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * self.previous_x0
        self.previous_x0, self.previous_h = x0, h
        return (beta_next / beta) * x - alpha_next * (exp_neg_h - 1.0) * denoised
