"""Self-conditioning (model.model.self_condition): what the U-Net sees in training and at each sampling step."""

from __future__ import annotations

import pytest
import torch

from main.diffusion import alpha_beta, clean_estimate
from main.inference.guidance import diffgen_velocity, generate_latent, is_self_conditioned
from main.modules import text_conditional_loss
from main.nets.builders import build_diffgen
from main.nets.self_condition import SelfConditionedNet, self_conditioned_training_fn


def _estimates_seen(model: torch.nn.Module) -> list:
    """Records the estimate every forward of `model`'s SelfConditionedNet receives (None: zeros)."""
    net = next(m for m in model.modules() if isinstance(m, SelfConditionedNet))
    seen: list = []
    net.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("self_condition")), with_kwargs=True)
    return seen


@pytest.mark.parametrize("patch_size", [1, 2])
def test_self_conditioned_diffgen_takes_twice_the_channels_and_returns_the_latent_shape(tiny_diffgen_config,
                                                                                       patch_size):
    model = build_diffgen(**{**tiny_diffgen_config, "self_condition": True, "patch_size": patch_size})
    assert is_self_conditioned(model) and not is_self_conditioned(build_diffgen(**tiny_diffgen_config))
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv1d))
    assert first_conv.in_channels == 2 * 8 * patch_size
    x, embedding = torch.randn(2, 8, 16), torch.randn(2, 4, 384)
    mask = torch.ones(2, 4, dtype=torch.bool)
    zeros = diffgen_velocity(model, x, torch.rand(2), embedding, mask)
    assert zeros.shape == x.shape
    sigmas = torch.full((2,), 0.5)
    with torch.no_grad():
        plain = diffgen_velocity(model, x, sigmas, embedding, mask)
        same = diffgen_velocity(model, x, sigmas, embedding, mask, torch.zeros_like(x))
        other = diffgen_velocity(model, x, sigmas, embedding, mask, torch.ones_like(x))
    torch.testing.assert_close(plain, same)  # no estimate means zeros
    assert not torch.allclose(plain, other)  # the estimate reaches the output
    with pytest.raises(ValueError, match="self_condition"):
        diffgen_velocity(build_diffgen(**tiny_diffgen_config), x, sigmas, embedding, mask, torch.zeros_like(x))


def test_clean_estimate_inverts_the_v_parameterisation():
    x0, noise, sigmas = torch.randn(3, 2, 5), torch.randn(3, 2, 5), torch.tensor([0.1, 0.5, 0.9])
    alphas, betas = alpha_beta(sigmas.view(-1, 1, 1))
    x_noisy, v = alphas * x0 + betas * noise, alphas * noise - betas * x0
    torch.testing.assert_close(clean_estimate(x_noisy, sigmas, v), x0)


def test_training_feeds_a_gradient_free_first_estimate_to_the_chosen_rows_only():
    calls = []

    def velocity(x, sigmas, estimate, rows):
        calls.append((x.shape[0], torch.is_grad_enabled(), None if estimate is None else estimate.clone(), rows))
        return x * weight

    weight = torch.tensor(0.5, requires_grad=True)
    torch.manual_seed(0)
    x, sigmas = torch.randn(64, 2, 3), torch.rand(64)
    out = self_conditioned_training_fn(velocity, proba=0.5)(x, sigmas)
    (first_n, first_grad, first_estimate, rows), (second_n, second_grad, estimate, second_rows) = calls
    assert first_estimate is None and not first_grad and first_n == int(rows.sum()) and 20 < first_n < 44
    assert second_n == 64 and second_grad and second_rows is None and out.requires_grad
    torch.testing.assert_close(estimate[rows], clean_estimate(x[rows], sigmas[rows], x[rows] * 0.5))
    assert not estimate[~rows].any() and not estimate.requires_grad
    calls.clear()
    self_conditioned_training_fn(velocity, proba=0.0)(x, sigmas)
    assert len(calls) == 1 and not calls[0][2].any()
    with pytest.raises(ValueError, match="probability"):
        self_conditioned_training_fn(velocity, proba=1.5)


def test_text_conditional_loss_trains_the_self_conditioned_path(tiny_diffgen_config):
    model = build_diffgen(**{**tiny_diffgen_config, "self_condition": True})
    seen = _estimates_seen(model)
    torch.manual_seed(0)
    latent, embedding = torch.randn(16, 8, 16), torch.randn(16, 4, 384)
    loss = text_conditional_loss(model, latent, embedding, torch.ones(16, 4, dtype=torch.bool), 0.1)
    loss.backward()
    first, second = seen
    assert first is None and second.shape == latent.shape
    with_estimate = second.abs().sum(dim=(1, 2)) > 0
    assert 0 < int(with_estimate.sum()) < 16  # about half the rows see an estimate
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_sampling_feeds_each_step_the_previous_guided_estimate(tiny_diffgen_config, cfg_scale):
    torch.manual_seed(0)
    model = build_diffgen(**{**tiny_diffgen_config, "self_condition": True}).eval()
    seen = _estimates_seen(model)
    embedding, mask = torch.randn(2, 4, 384), torch.ones(2, 4, dtype=torch.bool)
    noise = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        first = generate_latent(model, embedding, mask, noise, 4, cfg_scale, "ddim")
        again = generate_latent(model, embedding, mask, noise, 4, cfg_scale, "ddim")
    torch.testing.assert_close(first, again)  # no state leaks from one generation into the next
    assert len(seen) == 8 and seen[0] is None and seen[4] is None
    rows = 2 if cfg_scale == 1.0 else 4  # CFG runs both branches in one batch, with the same estimate
    assert all(estimate.shape == (rows, 8, 16) for estimate in seen[1:4])
    if cfg_scale != 1.0:
        torch.testing.assert_close(seen[1][:2], seen[1][2:])
    # the last step's input estimate is the clean sample implied by the step before (DDIM: x_{t-1} from it)
    assert not torch.equal(seen[2], seen[3])
