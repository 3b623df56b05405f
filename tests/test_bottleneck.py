"""The tanh bottleneck's saturation (logged during DiffAE training) and rescaling a saturated encoder's output."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from main.modules import DMAE
from main.nets.bottleneck import bottleneck_excess, latent_saturation, pre_bottleneck, rescale_pre_bottleneck_
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


def test_bottleneck_excess_is_zero_inside_the_limit():
    values = torch.tensor([-3.0, -1.5, -1.0, 0.0, 1.0, 1.5, 2.0, 4.5])
    assert float(bottleneck_excess(values, 1.5)) == (1.5 ** 2 + 0.5 ** 2 + 3.0 ** 2) / 8
    assert float(bottleneck_excess(values.clamp(-1.5, 1.5), 1.5)) == 0.0


def encoder_grad(module: DMAE, audio: torch.Tensor) -> torch.Tensor:
    """The training loss's gradient on the encoder's output layer."""
    module.zero_grad()
    torch.manual_seed(0)
    module.diffusion_loss(module.model, {"audio": audio}, training=True).backward()
    return module.model.encoder.to_out.weight.grad.clone()


def test_bottleneck_penalty_pulls_a_saturated_encoder_back(tiny_diffae_config):
    """A saturated tanh passes the encoder no gradient, so plain training leaves it binary for good; with
    `bottleneck_penalty` the gradient points the encoder's output back inside the limit, and a few SGD steps on it
    bring the latent out of saturation."""
    audio = tones(1)[0]
    pl.seed_everything(0)
    plain = DMAE(model=tiny_diffae_config, sample_rate=16000)
    saturate_(plain.model)
    assert encoder_grad(plain, audio).abs().max() < 1e-6  # dead: no way out by training

    pl.seed_everything(0)
    module = DMAE(model=tiny_diffae_config, sample_rate=16000, bottleneck_penalty=1.0, bottleneck_limit=1.5)
    module.log = lambda *args, **kwargs: None  # outside a Trainer
    saturate_(module.model, factor=20.0)
    saturation, excess = (latent_saturation(module.model, module.model.encode(audio)),
                          float(bottleneck_excess(pre_bottleneck(module.model, audio), 1.5)))
    assert saturation > 0.7
    optimizer = torch.optim.Adam(module.model.encoder.parameters(), lr=1e-2)
    for _ in range(20):
        assert encoder_grad(module, audio).abs().max() > 1e-3
        optimizer.step()
    assert float(bottleneck_excess(pre_bottleneck(module.model, audio), 1.5)) < 0.5 * excess
    assert latent_saturation(module.model, module.model.encode(audio)) < saturation - 0.1
