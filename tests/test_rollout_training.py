"""Training the DiffAE decoder on its own previous step (`model.rollout_proba`): the rolled-out items start from
the network's own estimate at a higher noise level, their target stays the real audio, and nothing else changes."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from main.diffusion import alpha_beta, rollout_loss_and_estimate, v_diffusion_loss_and_estimate
from main.modules import DMAE
from tests.conftest import ToneDataset


def oracle(x: torch.Tensor, error_without_grad: float = 0.0):
    """A velocity function whose clean estimate is exactly `x`, plus `error_without_grad` in the estimates it makes
    under torch.no_grad (the rollout's forward pass), as a decoder that errs at high noise levels."""
    def velocity_fn(x_noisy: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        alphas, betas = (t.view(-1, *[1] * (x.ndim - 1)) for t in alpha_beta(sigmas))
        estimate = x if torch.is_grad_enabled() else x + error_without_grad * torch.sin(torch.arange(
            x.shape[-1], dtype=x.dtype) * 2.5)
        return (alphas * x_noisy - estimate) / betas
    return velocity_fn


def waveforms(batch: int = 64) -> torch.Tensor:
    return 0.3 * torch.randn(batch, 2, 256, generator=torch.Generator().manual_seed(0))


def test_with_no_rollout_it_is_the_plain_v_loss_in_the_same_rng_order():
    x = waveforms()
    velocity_fn = lambda x_noisy, s: x_noisy * 0.5 + s.view(-1, 1, 1)  # noqa: E731
    torch.manual_seed(1)
    plain = v_diffusion_loss_and_estimate(velocity_fn, x)
    torch.manual_seed(1)
    *rolled, mask = rollout_loss_and_estimate(velocity_fn, x, proba=0.0)
    assert not bool(mask.any())
    for a, b in zip(plain, rolled):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_rolled_out_items_start_from_the_networks_own_step_and_leave_the_v_loss():
    x = waveforms()
    erring, inputs = oracle(x, error_without_grad=0.05), []

    def recording(x_noisy: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            inputs.append(x_noisy)
        return erring(x_noisy, sigmas)

    torch.manual_seed(2)
    loss, estimate, sigmas, rolled = rollout_loss_and_estimate(recording, x, proba=0.5)
    assert 0 < int(rolled.sum()) < len(x)
    # a network that maps every input to the real audio: zero v-loss on the plain items, real audio estimated
    assert float(loss) < 1e-8
    torch.testing.assert_close(estimate, x, atol=1e-5, rtol=0)
    # the rolled-out inputs carry the error of its step from a higher level; the others are x + the drawn noise
    torch.manual_seed(2)
    torch.rand(x.shape[0])
    alphas, betas = alpha_beta(sigmas.view(-1, 1, 1))
    plain_input = alphas * x + betas * torch.randn_like(x)
    same = torch.isclose(inputs[0], plain_input, atol=1e-4).flatten(1).all(1)
    assert not bool(same[rolled].any()) and bool(same[~rolled].all())
    # with every item rolled out, nothing is left for the v-MSE
    assert float(rollout_loss_and_estimate(lambda x_noisy, s: torch.zeros_like(x_noisy), x, proba=1.0)[0]) == 0.0


def test_rolled_items_are_drawn_at_low_noise_levels_and_the_others_as_usual():
    x = waveforms(512)
    calls = []
    velocity_fn = lambda x_noisy, s: calls.append(s) or torch.zeros_like(x_noisy)  # noqa: E731
    torch.manual_seed(3)
    _, _, sigmas, rolled_mask = rollout_loss_and_estimate(velocity_fn, x, proba=0.5, sigma_range=(0.01, 0.1))
    torch.manual_seed(3)
    uniform = torch.rand(x.shape[0])
    torch.randn_like(x)
    rolled = torch.rand(x.shape[0]) < 0.5
    assert bool((rolled == rolled_mask).all()) and 200 < int(rolled.sum()) < 312
    assert bool(((sigmas[rolled] >= 0.01) & (sigmas[rolled] <= 0.1)).all())
    torch.testing.assert_close(sigmas[~rolled], uniform[~rolled], rtol=0, atol=0)
    # the rollout's own step starts higher than the level it is carried down to
    sigmas_hi = calls[0]
    assert bool((sigmas_hi >= sigmas).all())


def test_dmae_trains_with_rollout_and_validates_on_the_plain_v_loss(tiny_diffae_config):
    pl.seed_everything(0)
    plain = DMAE(model=tiny_diffae_config, sample_rate=16000)
    rollout = DMAE(model=tiny_diffae_config, sample_rate=16000, rollout_proba=0.5, spectral_loss_weight=0.03)
    rollout.model.load_state_dict(plain.model.state_dict())
    batch = {"audio": torch.stack([ToneDataset(size=2)[i]["audio"] for i in range(2)])}
    torch.manual_seed(3)
    validation = rollout.diffusion_loss(rollout.model, batch, training=False)
    torch.manual_seed(3)
    torch.testing.assert_close(validation, plain.diffusion_loss(plain.model, batch, training=False), rtol=0, atol=0)
    torch.manual_seed(3)
    loss = rollout.diffusion_loss(rollout.model, batch, training=True)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in rollout.model.net.parameters() if p.requires_grad)


@pytest.mark.parametrize("overrides", [["model.rollout_proba=1.5"], ["model.rollout_proba=-0.1"],
                                       ["model.rollout_proba=abc"], ["model.rollout_proba=0.5"]])
def test_bad_rollout_settings_fail_at_start_up_naming_the_key(tmp_path, overrides):
    from main.config import ConfigError, validate_config
    from tests.test_train_cli import compose_exp

    spectral = [] if overrides == ["model.rollout_proba=0.5"] else ["+model.spectral_loss_weight=0.03"]
    cfg = compose_exp("dmae_tiny", f"paths.root_dir={tmp_path}", *overrides, *spectral)
    with pytest.raises(ConfigError, match="model.rollout_proba"):
        validate_config(cfg)


def test_the_original_size_recipe_composes_with_rollout_and_keeps_the_original_training_by_default(tmp_path):
    from main.models import DIFFAE_CONFIG
    from tests.test_train_cli import compose_exp

    cfg = compose_exp("dmae", f"paths.root_dir={tmp_path}", "model.rollout_proba=0.5",
                      "+model.spectral_loss_weight=0.03")
    assert cfg.model.rollout_proba == 0.5 and cfg.model.spectral_loss_weight == 0.03
    assert dict(cfg.model.model) == DIFFAE_CONFIG
    for exp in ("dmae", "dmae_demo", "dmae_real_birds", "dmae_tiny"):
        assert compose_exp(exp, f"paths.root_dir={tmp_path}").model.rollout_proba == 0.0
