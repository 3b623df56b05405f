"""Fidelity metrics (main.analysis.fidelity): real recordings score near the real-vs-real floor, and degraded real
recordings (added noise, clipping, stretched syllables, a shifted embedding distribution) score clearly worse."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from main.analysis import fidelity as F
from main.data.synthetic.songs import SPECIES, synthesize_recording


def _recordings(per_species: int, seed: int) -> tuple[list[np.ndarray], list[str]]:
    """Mono 3-second synthetic songs, `per_species` of each species."""
    rng = np.random.default_rng(seed)
    clips, species = [], []
    for index, s in enumerate(SPECIES):
        for _ in range(per_species):
            clips.append(synthesize_recording(index, rng, 3.0, F.SAMPLE_RATE, 1)[:, 0].astype(np.float64))
            species.append(s.sci_name)
    return clips, species


@pytest.fixture(scope="module")
def real():
    """Reference recordings (8 per species) and other real recordings of the same species (4 per species)."""
    reference, reference_species = _recordings(8, seed=1)
    others, species = _recordings(4, seed=2)
    return {"reference": [F.audio_features(c) for c in reference], "reference_species": reference_species,
            "clips": others, "species": species}


def _fidelity(real, clips):
    return F.fidelity([F.audio_features(c) for c in clips], real["species"], real["reference"],
                      real["reference_species"])


def test_real_recordings_score_near_the_floor(real):
    result = _fidelity(real, real["clips"])
    assert result["clipped_fraction"] == 0.0
    assert abs(result["noise_floor_db_vs_real"]) < 2.0
    assert result["rhythm_species_within_20pct"] >= 9 and result["rhythm_n_species"] == 10
    assert result["rhythm_log2_distance"] < 0.2
    low, high = result["noise_floor"]["ci95"]
    assert low <= result["noise_floor_db_vs_real"] <= high


def test_added_noise_raises_the_noise_floor(real):
    rng = np.random.default_rng(3)
    noisy = [c + 10 ** (-50 / 20) * rng.standard_normal(len(c)) for c in real["clips"]]  # -50 dBFS white noise
    result = _fidelity(real, noisy)
    assert result["noise_floor_db_vs_real"] > 5.0
    assert result["noise_floor"]["ci95"][0] > 3.0


def test_clipping_is_counted(real):
    loud = [np.clip(4.0 * c, -1.0, 1.0) for c in real["clips"]]
    result = _fidelity(real, loud)
    assert result["clipped_fraction"] == 1.0 and result["clipping"]["peak_max"] == 1.0
    assert result["clipping"]["clipped_ci95"][0] > 0.9


def test_stretched_syllables_break_the_rhythm(real):
    from scipy.signal import resample

    def stretched(clip: np.ndarray, factor: float) -> np.ndarray:
        """Played `factor` times slower (syllables and gaps `factor` times longer), cut to the same length."""
        return resample(clip, int(len(clip) * factor))[: len(clip)]

    for factor in (1.6, 0.6):
        clips = [stretched(np.tile(c, 2), factor) for c in real["clips"]] if factor < 1 else \
            [stretched(c, factor) for c in real["clips"]]
        result = _fidelity(real, clips)
        assert result["rhythm_species_within_20pct"] <= 3, factor
        assert result["rhythm_log2_distance"] > 0.4, factor


def test_segmentation_finds_each_syllable():
    rate = F.SAMPLE_RATE
    t = np.arange(int(0.1 * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 3000 * t)
    gap = np.zeros(int(0.2 * rate))
    audio = np.concatenate([gap, tone, gap, tone, gap, tone, gap]) + 1e-4 * np.random.default_rng(0).standard_normal(
        len(gap) * 4 + len(tone) * 3)
    features = F.audio_features(audio)
    assert features.syllables == 3
    # to within the 16 ms analysis window (a window overlapping a syllable's edge reads as the syllable's)
    assert features.syllable_s == pytest.approx([0.1] * 3, abs=0.025)
    assert features.gap_s == pytest.approx([0.2] * 2, abs=0.025)
    assert features.floor_db < -50  # -80 dB of noise below the tones, measured within the band


def test_fad_ratio_is_one_for_real_and_large_for_a_shifted_set():
    rng = np.random.default_rng(0)
    dim, species = 8, [f"s{i % 4}" for i in range(200)]
    reference = rng.standard_normal((200, dim))
    test = rng.standard_normal((120, dim))
    same = rng.standard_normal((40, dim))
    shifted = same + 1.0
    set_species = species[:40]
    near = F.fad_ratio(same, set_species, reference, species, test)
    far = F.fad_ratio(shifted, set_species, reference, species, test)
    assert near["n"] == 40 and near["n_floor"] == 40 and near["repeats"] == 10
    assert 0.3 < near["ratio"] < 2.0
    assert far["ratio"] > 5.0 and far["ci95"][0] > 3.0
    # the floor subsets keep the set's species mix
    for subset in F.matched_subsets(set_species, species, 3):
        assert sorted(species[i] for i in subset) == sorted(set_species)


def test_clipping_is_read_from_the_file_as_written(tmp_path):
    from main.audio import save_audio

    t = torch.arange(F.SAMPLE_RATE) / F.SAMPLE_RATE
    loud = 1.5 * torch.sin(2 * torch.pi * 1000 * t)[None]
    path = save_audio(tmp_path / "loud.wav", loud, F.SAMPLE_RATE)
    features = F.file_features(path)
    assert features.clipped_samples > 1000 and features.peak >= F.CLIP_LEVEL
    quiet = F.file_features(save_audio(tmp_path / "quiet.wav", 0.5 * loud, F.SAMPLE_RATE))
    assert quiet.clipped_samples == 0 and quiet.peak == pytest.approx(0.75, abs=1e-3)
    # opposite channels cancel in the channel mean, but each one clips
    stereo = F.file_features(save_audio(tmp_path / "stereo.wav", torch.cat([loud, -loud]), F.SAMPLE_RATE))
    assert stereo.clipped_samples > 2000 and stereo.peak >= F.CLIP_LEVEL


def test_evaluate_sets_reports_fidelity_without_birdnet(tmp_path):
    import soundfile as sf

    from main.analysis.clips import ClipSet
    from main.analysis.evaluate import evaluate_sets

    def folder(name: str, clips: list[np.ndarray], species: list[str]) -> ClipSet:
        paths = []
        for i, clip in enumerate(clips):
            path = tmp_path / name / f"{i:03d}.wav"
            path.parent.mkdir(exist_ok=True)
            sf.write(path, clip, F.SAMPLE_RATE)
            paths.append(str(path))
        return ClipSet(name, paths, species)

    clips, species = _recordings(2, seed=5)
    reference = folder("reference", clips[::2], species[::2])
    test = folder("test", clips[1::2], species[1::2])
    loud = folder("loud", [np.clip(5 * c, -1, 1) for c in clips[1::2]], species[1::2])
    results = evaluate_sets({"loud": loud}, test, None, birdnet=None, logmel=False, show_progress=False,
                            fidelity_reference=reference)
    fidelity = results["loud"]["fidelity"]
    assert fidelity["clipped_fraction"] == 1.0 and fidelity["fad_birdnet_ratio"] is None
    assert fidelity["rhythm_n_species"] == 10 and fidelity["n_clips"] == 10


def test_frechet_distances_agree_with_scipy_sqrtm():
    from scipy import linalg

    from main.analysis.fad import FrechetToReference, frechet_distance, gaussian_stats

    rng = np.random.default_rng(1)
    for n_ref, n_set, dim in ((300, 200, 16), (40, 30, 64)):  # full-rank, then singular covariances (N < dim)
        reference = gaussian_stats(rng.standard_normal((n_ref, dim)))
        other = gaussian_stats(0.7 * rng.standard_normal((n_set, dim)) + 0.2)
        diff = other.mu - reference.mu
        covmean = linalg.sqrtm(other.sigma @ reference.sigma).real
        expected = diff @ diff + np.trace(other.sigma) + np.trace(reference.sigma) - 2 * np.trace(covmean)
        assert frechet_distance(other.mu, other.sigma, reference.mu, reference.sigma) == pytest.approx(expected, rel=1e-6)
        assert FrechetToReference(reference).distance(other) == pytest.approx(expected, rel=1e-6)
