"""Output levels and the decoding schedule: decoded audio is scaled down (never clipped) to OUTPUT_PEAK, and the
decoding schedule's power 1 is the library's linear schedule, bit for bit."""

from __future__ import annotations

import pytest
import torch

from main.audio import limit_peak
from main.diffusion import linear_sigmas, sigma_schedule


def test_limit_peak_scales_loud_clips_down_and_leaves_quiet_ones_alone():
    t = torch.linspace(0, 1, 8000)
    loud = 1.6 * torch.sin(2 * torch.pi * 440 * t)
    quiet = 0.4 * torch.sin(2 * torch.pi * 440 * t)
    audio = torch.stack([torch.stack([loud, 0.5 * loud]), torch.stack([quiet, quiet])])
    out = limit_peak(audio, 0.95)
    assert out[0].abs().max().item() == pytest.approx(0.95)
    torch.testing.assert_close(out[0] / out[0].abs().max(), audio[0] / audio[0].abs().max())  # one gain per clip
    assert torch.equal(out[1], audio[1])  # under the peak: bit-identical
    with pytest.raises(ValueError, match="peak"):
        limit_peak(audio, 1.5)


def test_sigma_schedule_power_one_is_the_linear_schedule_and_two_ends_lower():
    for start in (1.0, 0.6):
        assert torch.equal(sigma_schedule(12, start=start), linear_sigmas(12, start=start))
    squared = sigma_schedule(12, power=2.0)
    assert squared[0] == 1.0 and squared[-1] == 0.0 and (squared.diff() < 0).all()
    assert squared[-2] == pytest.approx((1 / 12) ** 2)  # the last step starts far closer to clean audio
    with pytest.raises(ValueError, match="power"):
        sigma_schedule(12, power=0.0)


def test_decoded_audio_is_levelled_not_clipped(tiny_exports, tiny_diffae_config):
    from main.inference.decoding import OUTPUT_PEAK, decode_latent
    from main.nets.weights import load_model

    diffae, _ = load_model(tiny_exports["diffae"], "diffae")
    diffae.eval()
    latent = torch.randn(3, tiny_diffae_config["latent_channels"], 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    noise = torch.randn(3, diffae.in_channels, latent.shape[-1] * diffae.latent_factor)
    with torch.no_grad():
        raw = decode_latent(diffae, latent, 2, "ddim", noise=noise, peak=None)
        levelled = decode_latent(diffae, latent, 2, "ddim", noise=noise)
    assert raw.abs().amax() > OUTPUT_PEAK  # the tiny model overshoots: the limiter has work to do
    peaks = levelled.abs().amax(dim=(1, 2))
    assert (peaks <= OUTPUT_PEAK + 1e-6).all()
    torch.testing.assert_close(levelled, limit_peak(raw, OUTPUT_PEAK))
