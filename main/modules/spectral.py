"""A log-spectral loss on the DiffAE's clean estimates: the v-MSE barely sees broadband error 60 dB below a
syllable, which a log spectrogram (and BirdNET) shows plainly (BENCHMARKS.md, "Sound fidelity")."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def log_spectral_distance(estimate: Tensor, target: Tensor, n_ffts: Sequence[int] = (512, 1024, 2048),
                          floor_db: float = 80.0) -> Tensor:
    """Mean |log power difference| per item [batch] over STFT resolutions; powers below the target's loudest bin
    minus `floor_db` count as that floor (silence is not matched below it)."""
    est, tgt = estimate.flatten(0, -2).float(), target.flatten(0, -2).float()  # [items * channels, time]
    distances = []
    for n_fft in n_ffts:
        window = torch.hann_window(n_fft, device=est.device)
        est_power, tgt_power = (torch.stft(x, n_fft, n_fft // 4, window=window, return_complex=True).abs().square()
                                for x in (est, tgt))
        floor = tgt_power.amax(dim=(-2, -1), keepdim=True) * 10 ** (-floor_db / 10) + 1e-12
        distance = (torch.log(est_power + floor) - torch.log(tgt_power + floor)).abs().mean(dim=(-2, -1))
        distances.append(distance.view(*estimate.shape[:-1]).flatten(1).mean(1))
    return torch.stack(distances).mean(0)


def low_noise_spectral_loss(estimate: Tensor, target: Tensor, sigmas: Tensor, max_sigma: float) -> Tensor:
    """`log_spectral_distance` averaged over the items whose noise level is at most `max_sigma` (0 when none is):
    at higher levels the clean estimate is a blurred mean, whose spectrum should not match the target's."""
    low = sigmas <= max_sigma
    if not bool(low.any()):
        return estimate.sum() * 0.0
    return log_spectral_distance(estimate[low], target[low]).mean()
