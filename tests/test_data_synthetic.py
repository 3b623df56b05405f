"""Synthetic bird songs: determinism, caching, metadata and species separability."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from main.data.manifest import read_manifest
from main.data.synthetic import PARAMS_FILE, SPECIES, generate_synthetic_dataset, synthesize_recording

SMALL = dict(clips_per_species=4, duration_s=1.5, sample_rate=16000, num_species=8)
XC_FIELDS = {"id", "gen", "sp", "ssp", "en", "cnt", "loc", "lat", "lng", "type", "q", "length", "date", "time",
             "also", "file-name"}


def _tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every generated file's bytes (the params file aside)."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != PARAMS_FILE}


def test_species_are_many_and_distinct() -> None:
    assert len(SPECIES) >= 8
    assert len({s.sci_name for s in SPECIES}) == len(SPECIES)
    assert len({s.contour for s in SPECIES}) >= 6
    for s in SPECIES:
        genus, epithet = s.sci_name.split(" ")
        assert genus[0].isupper() and epithet.islower() and s.en_name


def test_generation_is_deterministic(tmp_path: Path) -> None:
    a = generate_synthetic_dataset(tmp_path / "a", seed=7, **SMALL)
    b = generate_synthetic_dataset(tmp_path / "b", seed=7, **SMALL)
    files_a, files_b = _tree_bytes(a.parent), _tree_bytes(b.parent)
    assert len(files_a) == 8 * 4 + 3  # clips, metadata.json, manifest.csv, manifest.rejected.csv
    assert files_a == files_b
    c = generate_synthetic_dataset(tmp_path / "c", seed=8, **SMALL)
    assert _tree_bytes(c.parent) != files_a


def test_generation_is_cached_and_regenerates_on_change(tmp_path: Path) -> None:
    out = tmp_path / "syn"
    manifest = generate_synthetic_dataset(out, **SMALL)
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert generate_synthetic_dataset(out, **SMALL) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp
    # an incomplete set is regenerated
    first_clip = sorted(out.glob("XC*.flac"))[0]
    first_clip.unlink()
    generate_synthetic_dataset(out, **SMALL)
    assert first_clip.is_file()
    # other parameters replace the previous set
    generate_synthetic_dataset(out, **{**SMALL, "num_species": 2, "audio_format": "wav"})
    assert not list(out.glob("XC*.flac")) and len(list(out.glob("XC*.wav"))) == 8


def test_metadata_and_manifest(tmp_path: Path) -> None:
    manifest = generate_synthetic_dataset(tmp_path, background_probability=1.0, **SMALL)
    page = json.loads((tmp_path / "metadata.json").read_text())
    records = page["recordings"]
    assert len(records) == 32
    for record in records:
        assert XC_FIELDS <= set(record)
        assert record["length"] == "0:02" and record["q"] in "ABCDE"
        assert len(record["also"]) == 1 and record["also"][0] != f"{record['gen']} {record['sp']}"
    rows = read_manifest(manifest)
    assert len(rows) == 32 and {r["split"] for r in rows} == {"train", "valid", "test"}
    for row in rows:
        info = sf.info(row["path"])
        assert (info.samplerate, info.channels, info.frames) == (16000, 2, 24000)
        assert row["label"].startswith(row["sci_name"] + "; ")
        assert row["label"].endswith("; " + row["also"])
    species = {r["sci_name"] for r in rows}
    assert species == {s.sci_name for s in SPECIES[:8]}
    assert species == {r["sci_name"] for r in rows if r["split"] == "train"}


def test_recordings_are_clean_audio() -> None:
    rng = np.random.default_rng(0)
    for index in range(len(SPECIES)):
        audio = synthesize_recording(index, rng, 1.0, 16000, 2)
        assert audio.shape == (16000, 2) and audio.dtype == np.float32
        assert np.isfinite(audio).all() and 0.1 < np.abs(audio).max() <= 0.95
    with pytest.raises(ValueError, match="sample_rate"):
        synthesize_recording(0, rng, 1.0, 8000)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="audio_format"):
        generate_synthetic_dataset("/nonexistent", audio_format="aac")
    with pytest.raises(ValueError, match="num_species"):
        generate_synthetic_dataset("/nonexistent", num_species=99)


def test_nearest_centroid_on_mean_log_mel_separates_species(tmp_path: Path) -> None:
    manifest = generate_synthetic_dataset(tmp_path, **{**SMALL, "clips_per_species": 6}, seed=11)
    rows = read_manifest(manifest)
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=1024, hop_length=256, n_mels=64)
    features, names = [], []
    for row in rows:
        audio, _ = sf.read(row["path"], dtype="float32")
        spec = mel(torch.from_numpy(audio.T).mean(0))
        features.append(torch.log(spec + 1e-6).mean(-1).numpy())
        names.append(row["sci_name"])
    x, y = np.stack(features), np.array(names)
    species = sorted(set(names))
    train = np.zeros(len(y), bool)
    for name in species:  # first three clips of each species fit the centroids, the other three are held out
        train[np.where(y == name)[0][:3]] = True
    centroids = np.stack([x[train & (y == name)].mean(0) for name in species])
    distances = ((x[~train, None, :] - centroids[None]) ** 2).sum(-1)
    predicted = np.array(species)[distances.argmin(1)]
    accuracy = float((predicted == y[~train]).mean())
    assert accuracy >= 0.9, accuracy
