"""The DiffAE's optional log-spectral loss: it sees the broadband error under and between syllables that the v-MSE
barely weighs, it only counts low noise levels, and it leaves the v-loss (and validation) as they were."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from main.modules import DMAE
from main.modules.spectral import log_spectral_distance, low_noise_spectral_loss
from tests.conftest import ToneDataset


def syllables(rate: int = 16000, seconds: float = 1.0) -> torch.Tensor:
    """A 2 kHz tone in 0.1 s syllables with silent gaps [1, 1, time]."""
    t = torch.arange(int(rate * seconds)) / rate
    gate = ((t * 5) % 1 < 0.5).float()
    return (0.5 * torch.sin(2 * torch.pi * 2000 * t) * gate)[None, None]


def test_broadband_noise_far_below_the_syllables_is_what_it_measures():
    target = syllables()
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    distances = [float(log_spectral_distance(target + noise * 10 ** (-db / 20), target)) for db in (40, 60, 80)]
    assert distances[0] > distances[1] > distances[2] > 0  # -40 dB noise, -60 dB, -80 dB
    assert float(log_spectral_distance(target, target)) == 0.0
    # the v-MSE of the same errors differs by 1e4 between -40 and -80 dB; the log-spectral distance keeps them visible
    assert distances[1] > 0.2 * distances[0]


def test_only_low_noise_levels_count():
    target = syllables().repeat(3, 1, 1)
    estimate = target + 1e-3 * torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    sigmas = torch.tensor([0.1, 0.5, 0.9])
    low = low_noise_spectral_loss(estimate, target, sigmas, max_sigma=0.3)
    torch.testing.assert_close(low, log_spectral_distance(estimate[:1], target[:1]).mean())
    assert float(low_noise_spectral_loss(estimate, target, sigmas, max_sigma=0.05)) == 0.0


def test_dmae_adds_the_weighted_term_to_the_same_v_loss_and_validates_on_the_v_loss(tiny_diffae_config):
    pl.seed_everything(0)
    plain = DMAE(model=tiny_diffae_config, sample_rate=16000)
    spectral = DMAE(model=tiny_diffae_config, sample_rate=16000, spectral_loss_weight=0.5, spectral_loss_max_sigma=1.0)
    spectral.model.load_state_dict(plain.model.state_dict())
    batch = {"audio": torch.stack([ToneDataset(size=2)[i]["audio"] for i in range(2)])}
    logged = {}
    spectral.log = lambda name, value, **kwargs: logged.__setitem__(name, value)  # outside a Trainer
    for training in (False, True):
        torch.manual_seed(3)
        v_loss = plain.diffusion_loss(plain.model, batch, training=training)
        torch.manual_seed(3)
        total = spectral.diffusion_loss(spectral.model, batch, training=training)
        if training:  # every item counts (max sigma 1): v-loss + 0.5 * the logged log-spectral distance
            assert float(logged["train/spectral_loss"]) > 0
            torch.testing.assert_close(total, v_loss + 0.5 * logged["train/spectral_loss"])
        else:
            torch.testing.assert_close(total, v_loss, rtol=0, atol=0)


@pytest.mark.parametrize("override, message", [("+model.spectral_loss_weight=-0.1", "model.spectral_loss_weight"),
                                               ("+model.spectral_loss_max_sigma=0", "model.spectral_loss_max_sigma"),
                                               ("+model.spectral_loss_weight=abc", "model.spectral_loss_weight")])
def test_bad_settings_fail_at_start_up_naming_the_key(tmp_path, override, message):
    from main.config import ConfigError, validate_config
    from tests.test_train_cli import compose_exp

    cfg = compose_exp("dmae_tiny", f"paths.root_dir={tmp_path}", override)
    with pytest.raises(ConfigError, match=message):
        validate_config(cfg)
