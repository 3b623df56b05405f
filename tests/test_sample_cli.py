"""`python -m main.sample`: prompts -> WAV + spectrogram files, reproducible by seed."""

from __future__ import annotations

import json

import soundfile as sf

from main.sample import main as sample_main


def test_sample_cli_writes_reproducible_clips(tmp_path, tiny_exports):
    common = ["--diffae", str(tiny_exports["diffae"]), "--diffgen", str(tiny_exports["diffgen"]),
              "--prompt", "Turdus merula; morning; song", "--prompt", "Synthia fluvialis", "--num", "2",
              "--seconds", "0.5", "--steps", "3", "--batch-size", "3", "--device", "cpu"]
    first = sample_main([*common, "--out", str(tmp_path / "a")])
    second = sample_main([*common, "--out", str(tmp_path / "b")])
    assert [p.name for p in first] == ["Turdus_merula_morning_song_000.wav", "Turdus_merula_morning_song_001.wav",
                                       "Synthia_fluvialis_000.wav", "Synthia_fluvialis_001.wav"]
    for a, b in zip(first, second):
        assert a.read_bytes() == b.read_bytes()
        assert a.with_suffix(".png").is_file()
        info = sf.info(str(a))
        assert info.samplerate == 16000 and info.frames == 8000 and info.channels == 2
    assert first[0].read_bytes() != first[1].read_bytes()
    settings = json.loads((tmp_path / "a/settings.json").read_text())
    assert settings["sampler"] == "dpmpp-2m" and settings["latent_frames"] == 126  # 8000 samples / 64, rounded up to even
    assert settings["batched"] is None  # the default: serial on a CPU
    # --batched: each step's clips run through the models together, from the same per-clip noise
    batched = sample_main([*common, "--batched", "--out", str(tmp_path / "c")])
    for a, c in zip(first, batched):
        serial, together = sf.read(str(a), dtype="int16")[0], sf.read(str(c), dtype="int16")[0]
        assert abs(serial.astype(int) - together.astype(int)).max() <= 4


def test_sample_cli_variation_of_an_input_recording(tmp_path, tiny_exports):
    import numpy as np

    source = tmp_path / "input.wav"
    sf.write(str(source), np.random.default_rng(0).normal(0, 0.1, (6000, 1)).astype("float32"), 16000)
    written = sample_main(["--diffae", str(tiny_exports["diffae"]), "--diffgen", str(tiny_exports["diffgen"]),
                           "--prompt", "Synthia fluvialis", "--input-audio", str(source), "--strength", "0.4",
                           "--steps", "4", "--device", "cpu", "--out", str(tmp_path / "out")])
    info = sf.info(str(written[0]))
    assert info.frames == 6000 and info.channels == 2
