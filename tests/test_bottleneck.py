"""The tanh bottleneck's saturation (logged during DiffAE training) and rescaling a saturated encoder's output."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from main.modules import DMAE
from main.nets.bottleneck import latent_saturation, pre_bottleneck, rescale_pre_bottleneck_
from main.nets.builders import build_diffae
from tests.conftest import ToneDataset, collate


def tones(batches: int = 2) -> list[torch.Tensor]:
    """Batches of the stand-in data set's stereo tones."""
    loader = DataLoader(ToneDataset(size=4 * batches), batch_size=4, collate_fn=collate)
    return [batch["audio"] for batch in loader]


def saturate_(diffae: torch.nn.Module, factor: float = 1000.0) -> None:
    """Blow up the encoder's output, as a long training run did to the demo DiffAE's (|x| ~ 20-90)."""
    with torch.no_grad():
        diffae.encoder.to_out.weight.mul_(factor)
        diffae.encoder.to_out.bias.mul_(factor)


def test_latent_saturation_counts_values_at_the_bounds(tiny_diffae_config):
    diffae = build_diffae(**tiny_diffae_config)
    latent = torch.tensor([[-1.0, -0.97, -0.5, 0.0, 0.5, 0.94, 0.96, 1.0]])
    assert latent_saturation(diffae, latent) == 0.5
    diffae.encoder.bottlenecks = torch.nn.ModuleList()  # no tanh: unbounded, no saturation to speak of
    assert latent_saturation(diffae, latent) is None


def test_rescaling_desaturates_and_keeps_the_code(tiny_diffae_config):
    """A saturated encoder: after rescaling, the bottleneck's input has the target std per channel, the latent's
    signs (the binary code the decoder knew) are unchanged, and the latent is no longer saturated."""
    torch.manual_seed(0)
    diffae = build_diffae(**tiny_diffae_config).eval()
    saturate_(diffae)
    audio = tones()
    before = torch.cat([diffae.encode(a) for a in audio])
    assert latent_saturation(diffae, before) > 0.9
    scale = rescale_pre_bottleneck_(diffae, audio, target_std=0.5)
    assert scale.shape == (diffae.encoder.to_out.out_channels,) and bool((scale < 1).all())
    pre = torch.cat([pre_bottleneck(diffae, a) for a in audio]).transpose(1, 2).flatten(0, 1)
    torch.testing.assert_close(pre.std(0), torch.full_like(pre.std(0), 0.5), rtol=1e-4, atol=1e-5)
    after = torch.cat([diffae.encode(a) for a in audio])
    assert torch.equal(torch.sign(after), torch.sign(before))
    assert latent_saturation(diffae, after) < 0.5  # the channels' means stay: tiny, untrained, large offsets


def test_dmae_validation_logs_the_latent_saturation(tiny_diffae_config):
    """valid/latent_saturation reads the EMA encoder: near 1 for a saturated one, low after rescaling."""
    pl.seed_everything(0)
    module = DMAE(model=tiny_diffae_config, sample_rate=16000)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    loader = DataLoader(ToneDataset(), batch_size=4, collate_fn=collate)
    saturate_(module.ema_model)
    saturated = trainer.validate(module, loader, verbose=False)[0]["valid/latent_saturation"]
    rescale_pre_bottleneck_(module.ema_model, tones(), target_std=0.5)
    rescaled = trainer.validate(module, loader, verbose=False)[0]["valid/latent_saturation"]
    assert saturated > 0.9 and rescaled < 0.5, (saturated, rescaled)
