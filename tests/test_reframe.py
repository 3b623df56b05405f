"""Carrying a trained DiffAE decoder over to a longer LT window (main.nets.reframe)."""

from __future__ import annotations

import logging

import pytest
import torch

from main.models import build_diffae
from main.modules import DMAE
from main.nets.fourier import learned_transform
from main.nets.reframe import _first_and_last_convs, reframe_decoder_
from tests.conftest import save_export


def _short_and_long(config: dict) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A tiny DiffAE on the 2x Fourier frame (32 at hop 16) with random U-Net weights, and its 4x twin (64)."""
    torch.manual_seed(0)
    short = build_diffae(**{**config, "lt_num_filters": 32, "lt_window_length": 32, "lt_init": "fourier"})
    long = build_diffae(**{**config, "lt_num_filters": 64, "lt_window_length": 64, "lt_init": "fourier"})
    with torch.no_grad():  # trained-like first and last layers: not the near-zero output of a fresh U-Net
        for conv in _first_and_last_convs(short)[:2]:
            conv.weight.normal_(0, 0.3)
    return short.eval(), long.eval()


def test_reframed_decoder_predicts_like_the_source(tiny_diffae_config):
    """With a skip scale equal for every bin (the one part that cannot be mapped exactly), the carried-over
    decoder on the 4x Hann frame predicts what the source does on the 2x sine frame, at every noise level."""
    short, long = _short_and_long(tiny_diffae_config)
    scale = _first_and_last_convs(short)[2]
    with torch.no_grad():
        scale.weight.zero_()
        scale.bias.fill_(0.7)
    reframe_decoder_(long, short)
    for transform, window in zip(learned_transform(long), (64, 64)):
        assert transform.kernel_size[0] == window  # the target keeps its own frame
    latent = short.encode(torch.randn(2, 2, 4096) * 0.3).detach()
    channels = [None] * short.inject_depth + [latent]
    noisy = torch.randn(2, 2, 4096)
    noisy[..., :64] = noisy[..., -64:] = 0  # the two frames pad the ends differently; with silence there, alike
    for sigma in (0.1, 0.5, 0.9):
        with torch.no_grad():
            expected = short.net(noisy, torch.full((2,), sigma), channels=channels)
            got = long.net(noisy, torch.full((2,), sigma), channels=channels)
        assert (expected - noisy).abs().mean() > 0.05  # the U-Net's part is not negligible
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_reframing_refuses_other_architectures(tiny_diffae_config):
    short, long = _short_and_long(tiny_diffae_config)
    wider = build_diffae(**{**tiny_diffae_config, "channels": [16, 32, 64], "lt_num_filters": 64,
                            "lt_window_length": 64, "lt_init": "fourier"})
    with pytest.raises(ValueError, match="same architecture apart from the LT window"):
        reframe_decoder_(wider, short)
    with pytest.raises(ValueError, match="longer LT window"):
        reframe_decoder_(short, long)


def test_dmae_init_from_a_shorter_lt_window_reframes(tmp_path, tiny_diffae_config, caplog):
    """`model.init_from` a DiffAE whose LT window is shorter: the encoder is the source's and the decoder is
    carried over (logged), not a shape error."""
    short, _ = _short_and_long(tiny_diffae_config)
    short_config = {**tiny_diffae_config, "lt_num_filters": 32, "lt_window_length": 32, "lt_init": "fourier"}
    weights = save_export(short, tmp_path / "short", {"kind": "diffae", "model": short_config, "sample_rate": 16000})
    config = {**tiny_diffae_config, "lt_num_filters": 64, "lt_window_length": 64, "lt_init": "fourier"}
    with caplog.at_level(logging.INFO, logger="main.modules.dmae"):
        module = DMAE(model=config, init_from=str(weights), freeze_transform=True)
    assert "LT window 32 -> 64" in caplog.text
    for name, tensor in short.encoder.state_dict().items():
        torch.testing.assert_close(module.model.encoder.state_dict()[name], tensor, rtol=0, atol=0)
    assert learned_transform(module.model)[0].weight.shape[-1] == 64
