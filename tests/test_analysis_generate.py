"""`python -m main.analysis generate` / `reconstruct` with tiny untrained models: end to end, seeded, resumable."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf

from main.analysis.cli import main as analysis_main
from main.analysis.clips import clips_from_folder, select_rows
from main.data.synthetic import generate_synthetic_dataset


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """10 synthetic species x 3 clips of 3 s (16 kHz, like the tiny exports)."""
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), clips_per_species=3, duration_s=3.0,
                                      sample_rate=16000)


def _generate(tiny_exports, manifest, out, *extra):
    return analysis_main(["generate", "--diffae", str(tiny_exports["diffae"]), "--diffgen",
                          str(tiny_exports["diffgen"]), "--manifest", str(manifest), "--split", "test",
                          "--num", "5", "--seconds", "0.5", "--steps", "2", "--cfg", "2.5", "--seed", "7",
                          "--device", "cpu", "--out", str(out), *extra])


def test_generate_end_to_end_seeded_and_resumable(tmp_path, tiny_exports, manifest):
    out = tmp_path / "gen"
    first = _generate(tiny_exports, manifest, out, "--batch-size", "2")
    assert (first.written, first.skipped, first.total) == (5, 0, 5)
    rows = list(csv.DictReader(open(out / "clips.csv")))
    assert [r["seed"] for r in rows] == ["7", "8", "9", "10", "11"]
    assert all(r["label"] and r["sci_name"] and r["source"] for r in rows)
    settings = json.loads((out / "generation.json").read_text())
    assert settings["cfg_scale"] == 2.5 and settings["steps"] == 2 and settings["sampler"] == "ddim"
    assert settings["seed"] == 7 and settings["latent_length"] > 0 and settings["split"] == "test"
    assert settings["models"]["diffgen"]["sha256"] and settings["models"]["text_encoder"]
    info = sf.info(str(out / rows[0]["file"]))
    assert (info.samplerate, info.frames, info.channels) == (16000, 8000, 2)
    audio = {r["file"]: (out / r["file"]).read_bytes() for r in rows}
    # each clip's DiffGen latent is kept and scored by the latent species probe against its prompt
    from main.analysis.generate import latent_path

    assert np.load(latent_path(out, rows[0]["file"])).shape == (8, settings["latent_length"])
    probe = json.loads((out / "latent_species.json").read_text())
    assert probe["generated"]["n"] == 5 and 0.0 <= probe["generated"]["accuracy"] <= 1.0
    assert probe["generated"]["ci95"][0] <= probe["generated"]["accuracy"] <= probe["generated"]["ci95"][1]
    assert probe["real"]["n"] >= 1 and probe["n_reference"] > 0 and probe["cfg_scale"] == 2.5
    # how the audio was decoded and levelled is part of the folder's settings
    assert settings["decoding_sigma_power"] == 2.0 and settings["output_peak"] == 0.95

    # Resuming: nothing new; then two clips deleted and regenerated in other batches give the same audio.
    again = _generate(tiny_exports, manifest, out, "--batch-size", "2")
    assert (again.written, again.skipped) == (0, 5)
    for name in (rows[1]["file"], rows[4]["file"]):
        (out / name).unlink()
    resumed = _generate(tiny_exports, manifest, out, "--batch-size", "3")
    assert (resumed.written, resumed.skipped) == (2, 3)
    for r in rows:
        new, _ = sf.read(str(out / r["file"]), dtype="int16")
        old, _ = sf.read(__import__("io").BytesIO(audio[r["file"]]), dtype="int16")
        assert np.array_equal(new, old)  # clips run through the models alone: batch size changes nothing
    assert len(clips_from_folder(out)) == 5

    # Other settings are refused rather than mixed into the folder.
    with pytest.raises(ValueError, match="other settings"):
        _generate(tiny_exports, manifest, out, "--sampler", "dpmpp-2m")


def test_seeded_clips_match_single_clip_sampling_and_batched_runs_are_close(tmp_path, tiny_exports):
    """`generate_clips` seeds clip i `seed + i`: serial, each clip equals `CombinedSampler.sample` of it alone;
    batched (--batched, the default on CUDA), the clips run through the models together from the same noise and
    match to float rounding; the folder records which."""
    from main.analysis.generate import generate_clips, load_sampler
    from main.audio import save_audio

    model, _ = load_sampler(tiny_exports["diffae"], tiny_exports["diffgen"], device="cpu")
    rows = [{"label": t, "sci_name": t, "file": ""} for t in ("Synthia fluvialis; song", "Gravis profundus; call",
                                                               "Bombyx stridulans")]
    kwargs = dict(steps=2, cfg_scale=3.0, seconds=0.5, seed=3, batch_size=3, show_progress=False)
    generate_clips(tmp_path / "serial", model, rows, **kwargs)
    generate_clips(tmp_path / "batched", model, rows, batched=True, **kwargs)
    samples = round(0.5 * model.sample_rate)
    for i, row in enumerate(rows):
        single = model.sample([row["label"]], sampling_steps=2, decoding_steps=2, embedding_scale=3.0,
                              latent_length=model.latent_frames(0.5), seed=3 + i)[0, :, :samples]
        serial = sf.read(str(sorted((tmp_path / "serial").glob("*.wav"))[i]), dtype="float32")[0].T
        batched = sf.read(str(sorted((tmp_path / "batched").glob("*.wav"))[i]), dtype="float32")[0].T
        expected = sf.read(str(save_audio(tmp_path / f"single_{i}.wav", single, model.sample_rate)),
                           dtype="float32")[0].T
        assert np.array_equal(serial, expected)
        assert np.abs(batched - serial).max() <= 4 / 32768
    assert json.loads((tmp_path / "serial/generation.json").read_text())["batched"] is False
    assert json.loads((tmp_path / "batched/generation.json").read_text())["batched"] is True


def test_settings_record_a_decoding_sampler_that_differs(tmp_path, tiny_exports, manifest):
    _generate(tiny_exports, manifest, tmp_path / "gen", "--sampler", "ddim", "--decoding-sampler", "dpmpp-2m")
    settings = json.loads((tmp_path / "gen" / "generation.json").read_text())
    assert settings["sampler"] == "ddim" and settings["decoding_sampler"] == "dpmpp-2m"


def test_select_rows_is_deterministic_and_cycles():
    rows = [{"sci_name": s, "file": f"{s}{i}", "label": s} for s in "ab" for i in range(2)]
    assert select_rows(rows, num=6, seed=1) == select_rows(rows, num=6, seed=1)
    assert len(select_rows(rows, num=6)) == 6
    per = select_rows(rows, per_species=3)
    assert [r["sci_name"] for r in per] == ["a"] * 3 + ["b"] * 3
    assert len(select_rows(rows, per_species=3, cycle=False)) == 4 and len(select_rows(rows, 9, cycle=False)) == 4
    with pytest.raises(ValueError):
        select_rows(rows, num=2, per_species=1)


def test_reconstruct_end_to_end_and_resumable(tmp_path, tiny_exports, manifest):
    out = tmp_path / "recon"
    args = ["reconstruct", "--diffae", str(tiny_exports["diffae"]), "--manifest", str(manifest), "--split", "train",
            "--per-species", "1", "--seconds", "0.5", "--steps", "2", "--batch-size", "4", "--device", "cpu",
            "--out", str(out)]
    first = analysis_main(args)
    assert (first.written, first.total) == (10, 10)
    clips = clips_from_folder(out)
    assert len(set(clips.species)) == 10
    info = sf.info(clips.paths[0])
    assert (info.samplerate, info.frames, info.channels) == (16000, 8000, 2)
    assert analysis_main(args).written == 0
    assert json.loads((out / "reconstruction.json").read_text())["kind"] == "reconstruct"


# `main.analysis generate` audio since decoding runs on the power-2 schedule and levels its output to OUTPUT_PEAK
# (a deliberate change of the audio; the latents are unchanged): clips 0..2 of the 3-clip run below, read back from
# the WAVs as float. Any change here means generated audio changed.
PINNED_GENERATE = {"sum": 7.03863525390625, "abs_sum": 8504.595520019531,
                   "samples": [0.055694580078125, 0.340179443359375, 0.35333251953125, -0.200927734375],
                   "latent_abs_sum": 21.68428148557723}


def _pinned_digest(out) -> dict:
    from main.analysis.generate import latent_path

    rows = list(csv.DictReader(open(out / "clips.csv")))
    audio = np.stack([sf.read(str(out / r["file"]), dtype="float32")[0] for r in rows]).astype(np.float64)
    latents = np.stack([np.load(latent_path(out, r["file"])) for r in rows]).astype(np.float64)
    return {"sum": float(audio.sum()), "abs_sum": float(np.abs(audio).sum()),
            "samples": [float(audio[c, i, ch]) for c, i, ch in ((0, 0, 0), (0, 1000, 1), (1, 4000, 0), (2, 7999, 1))],
            "latent_abs_sum": float(np.abs(latents).sum())}


def test_generate_audio_is_pinned(tmp_path, tiny_exports, manifest):
    out = tmp_path / "gen"
    analysis_main(["generate", "--diffae", str(tiny_exports["diffae"]), "--diffgen", str(tiny_exports["diffgen"]),
                   "--manifest", str(manifest), "--split", "test", "--num", "3", "--seconds", "0.5", "--steps", "2",
                   "--cfg", "2.5", "--seed", "7", "--device", "cpu", "--batch-size", "1", "--no-latent-probe",
                   "--out", str(out)])
    digest = _pinned_digest(out)
    # Clips are 16-bit PCM: another CPU's float rounding can move a few samples by one step (seen on CI: 2 steps
    # in abs_sum), while any change to the sampler moves these sums by thousands of steps.
    pcm_step = 1 / 32768
    assert digest["sum"] == pytest.approx(PINNED_GENERATE["sum"], abs=64 * pcm_step)
    assert digest["abs_sum"] == pytest.approx(PINNED_GENERATE["abs_sum"], abs=64 * pcm_step)
    assert digest["samples"] == pytest.approx(PINNED_GENERATE["samples"], abs=2 * pcm_step)
    assert digest["latent_abs_sum"] == pytest.approx(PINNED_GENERATE["latent_abs_sum"], rel=1e-6)
