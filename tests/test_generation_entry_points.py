"""The four ways to generate (main.sample, CombinedSampler.sample, the web UI, main.analysis generate) share one
seeded generation: for a model pair, prompts and seed they write bit-identical audio at any batch size."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from main.analysis.generate import generate_clips, load_sampler
from main.audio import save_audio
from main.sample import main as sample_main
from main.webui import generate_clip

PROMPTS = ["Turdus merula; morning; song", "Synthia fluvialis; call", "Gravis profundus"]
SEED, SECONDS, STEPS, CFG, SAMPLER = 7, 0.5, 2, 2.5, "ddim"


def _read(paths) -> list[np.ndarray]:
    return [sf.read(str(p), dtype="int16")[0] for p in paths]


@pytest.fixture(scope="module")
def model(tiny_exports):
    return load_sampler(tiny_exports["diffae"], tiny_exports["diffgen"], device="cpu")[0]


@pytest.fixture(scope="module")
def webui_clips(tmp_path_factory, model) -> list[np.ndarray]:
    """The web UI makes one clip per press: prompt i with seed SEED + i."""
    out = tmp_path_factory.mktemp("webui")
    return _read(generate_clip(model, out, p, None, CFG, STEPS, SEED + i, SECONDS, SAMPLER)[0]
                 for i, p in enumerate(PROMPTS))


@pytest.mark.parametrize("batch_size", [1, 3])
def test_entry_points_give_bit_identical_audio(tmp_path, tiny_exports, model, webui_clips, batch_size):
    written = sample_main(["--diffae", str(tiny_exports["diffae"]), "--diffgen", str(tiny_exports["diffgen"]),
                           *(a for p in PROMPTS for a in ("--prompt", p)), "--seconds", str(SECONDS),
                           "--sampling-steps", str(STEPS), "--embedding-scale", str(CFG), "--sampler", SAMPLER,
                           "--seed", str(SEED), "--batch-size", str(batch_size), "--device", "cpu",
                           "--out", str(tmp_path / "sample")])
    frames = model.latent_frames(SECONDS)
    samples = round(SECONDS * model.sample_rate)
    sampled = []
    for start in range(0, len(PROMPTS), batch_size):
        audio = model.sample(PROMPTS[start:start + batch_size], sampling_steps=STEPS, decoding_steps=STEPS,
                             embedding_scale=CFG, latent_length=frames, sampler=SAMPLER, seed=SEED + start)
        for i, clip in enumerate(audio[..., :samples]):
            sampled.append(save_audio(tmp_path / "combined" / f"{start + i}.wav", clip, model.sample_rate))
    rows = [{"label": p, "sci_name": p, "file": ""} for p in PROMPTS]
    report = generate_clips(tmp_path / "analysis", model, rows, sampling_steps=STEPS, sampler=SAMPLER,
                            embedding_scale=CFG, seconds=SECONDS, seed=SEED, batch_size=batch_size, show_progress=False)
    analysed = sorted((tmp_path / "analysis").glob("*.wav"))
    assert report.written == len(analysed) == len(PROMPTS)
    for name, clips in {"main.sample": _read(written), "CombinedSampler.sample": _read(sampled),
                        "main.analysis generate": _read(analysed)}.items():
        for i, (clip, reference) in enumerate(zip(clips, webui_clips)):
            assert clip.shape == (samples, 2) and np.array_equal(clip, reference), f"{name}, clip {i}"
    assert not np.array_equal(webui_clips[0], webui_clips[1])
    # the one output level: every entry point writes clips peaking at OUTPUT_PEAK at most, none at full scale
    from main.inference.decoding import OUTPUT_PEAK

    for clip in webui_clips:
        assert np.abs(clip.astype(np.int32)).max() <= round(OUTPUT_PEAK * 32767) + 1


def test_combined_sampler_batch_is_bit_identical_to_single_clips(model):
    frames = model.latent_frames(SECONDS)
    kwargs = dict(sampling_steps=STEPS, decoding_steps=STEPS, embedding_scale=CFG, latent_length=frames,
                  sampler=SAMPLER)
    batch = model.sample(PROMPTS, seed=SEED, **kwargs)
    for i, prompt in enumerate(PROMPTS):
        assert (batch[i:i + 1] == model.sample([prompt], seed=SEED + i, **kwargs)).all()


def test_batched_generation_uses_the_same_noise_per_clip(model):
    frames = model.latent_frames(SECONDS)
    kwargs = dict(sampling_steps=STEPS, decoding_steps=STEPS, embedding_scale=CFG, latent_length=frames,
                  sampler=SAMPLER, seed=SEED)
    exact = model.sample(PROMPTS, **kwargs)
    batched = model.sample(PROMPTS, batch_size=len(PROMPTS), **kwargs)
    assert batched.shape == exact.shape
    # Same noise, only the batched kernels' rounding differs; a different seed is far off.
    assert torch.allclose(batched, exact, atol=1e-4), (batched - exact).abs().max()
    other = model.sample(PROMPTS, **{**kwargs, "seed": SEED + 100})
    assert (other - exact).abs().max() > 100 * (batched - exact).abs().max()
    with pytest.raises(ValueError, match="batch_size"):
        model.sample(PROMPTS, batch_size=0, **kwargs)
