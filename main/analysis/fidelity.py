"""How close clips sound to real recordings, measured on the audio as written, for any species.

Four measurements, each compared with real recordings (the reference clips) and each able to fail:

- **FAD ratio**: the BirdNET-embedding Fréchet distance of a set to the real test clips, divided by the *floor*:
  the distance of real reference clips of the same N and species mix to the same test clips (mean over several
  random subsets). 1 = as close as other real recordings; the FAD alone depends on N and means little.
- **Clipping**: the share of clips with samples at full scale (|x| >= CLIP_LEVEL), and the peak levels.
- **Noise floor**: in each clip, the quiet frames' level (10th percentile of the band-limited frame energy)
  below its syllables' level (99th percentile), in dB; a set's figure is that against the real clips of the same
  species (0 = as quiet between syllables as real, +8 = 8 dB more hiss).
- **Rhythm**: syllables segmented from the band-limited envelope; per species the syllable rate (syllables per
  second of audio), syllable and gap durations against the real clips of that species; the number of species whose
  rate is within 20% of the real one, and a log2 distance (0 = the same, 1 = off by a factor of 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from main.files import PathLike

SAMPLE_RATE = 32000  # every clip is measured at this rate (resampled), whatever it was written at
CLIP_LEVEL = 0.999  # |sample| at or above this is full scale (a 16-bit WAV clamped at 1.0 reads 0.99997)
BAND_HZ = (150.0, 15000.0)  # the band the envelope is measured in: above hum and wind, below the top octave
FRAME_HOP = 160  # 5 ms at 32 kHz
FRAME_SIZE = 512
SMOOTH_FRAMES = 3  # moving average of the frame power (15 ms): one syllable is one run, not its pulses
FLOOR_PERCENTILE = 10.0
LOUD_PERCENTILE = 99.0
# A frame is a syllable's when it is within SYLLABLE_RANGE_DB of the loud level and above the midpoint between the
# floor and the loud level (for clips with less than 40 dB between the two).
SYLLABLE_RANGE_DB = 20.0
MIN_GAP_S = 0.03  # shorter silences are inside a syllable (trills, pulses, amplitude modulation)
MIN_SYLLABLE_S = 0.015  # shorter runs are clicks or jitter, not syllables
WITHIN = 0.2  # "within 20%" of the real syllable rate


@dataclass
class ClipFeatures:
    """What fidelity needs of one clip: level, clipping, noise floor and its syllables."""

    seconds: float
    peak: float
    clipped_samples: int
    floor_db: float  # noise floor below the loud level (negative; closer to 0 = noisier)
    syllables: int  # syllable onsets in the clip
    syllable_s: list[float] = field(default_factory=list)  # durations of syllables not cut by the clip's edges
    gap_s: list[float] = field(default_factory=list)  # silences between two syllables


def band_envelope_db(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Smoothed frame energy (dB) of mono `audio` in BAND_HZ, one value per FRAME_HOP samples."""
    x = np.asarray(audio, dtype=np.float64)
    if len(x) < FRAME_SIZE:
        x = np.pad(x, (0, FRAME_SIZE - len(x)))
    windows = np.lib.stride_tricks.sliding_window_view(x, FRAME_SIZE)[::FRAME_HOP]
    power = np.abs(np.fft.rfft(windows * np.hanning(FRAME_SIZE), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(FRAME_SIZE, 1.0 / sample_rate)
    band = (freqs >= BAND_HZ[0]) & (freqs <= min(BAND_HZ[1], sample_rate / 2))
    energy = power[:, band].sum(axis=-1)
    if SMOOTH_FRAMES > 1 and len(energy) >= SMOOTH_FRAMES:
        energy = np.convolve(energy, np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES, mode="same")
    return 10.0 * np.log10(energy + 1e-12)


def syllable_runs(envelope_db: np.ndarray, frame_s: float) -> list[tuple[int, int]]:
    """(start, end) frame indices of the syllables in an envelope: frames above the threshold, silences shorter
    than MIN_GAP_S bridged, runs shorter than MIN_SYLLABLE_S dropped."""
    if len(envelope_db) == 0:
        return []
    floor, loud = np.percentile(envelope_db, [FLOOR_PERCENTILE, LOUD_PERCENTILE])
    threshold = max(loud - SYLLABLE_RANGE_DB, 0.5 * (floor + loud))
    active = envelope_db > threshold
    edges = np.flatnonzero(np.diff(np.concatenate([[0], active.astype(np.int8), [0]])))
    runs = [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]
    merged: list[tuple[int, int]] = []
    for start, end in runs:
        if merged and (start - merged[-1][1]) * frame_s < MIN_GAP_S:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return [(a, b) for a, b in merged if (b - a) * frame_s >= MIN_SYLLABLE_S]


def audio_features(audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> ClipFeatures:
    """The fidelity features of mono `audio` (float, full scale 1.0) at `sample_rate`."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError(f"expected mono audio [samples], got shape {x.shape}")
    envelope = band_envelope_db(x, sample_rate)
    frame_s = FRAME_HOP / sample_rate
    runs = syllable_runs(envelope, frame_s)
    floor, loud = np.percentile(envelope, [FLOOR_PERCENTILE, LOUD_PERCENTILE])
    inner = [(a, b) for a, b in runs if a > 0 and b < len(envelope)]
    return ClipFeatures(
        seconds=len(x) / sample_rate,
        peak=float(np.abs(x).max()),
        clipped_samples=int((np.abs(x) >= CLIP_LEVEL).sum()),
        floor_db=float(floor - loud),
        syllables=sum(1 for a, _ in runs if a > 0),  # a run already sounding at the first frame began earlier
        syllable_s=[(b - a) * frame_s for a, b in inner],
        gap_s=[(b_start - a_end) * frame_s for (_, a_end), (b_start, _) in zip(runs, runs[1:])],
    )


def file_features(path: PathLike) -> ClipFeatures:
    """The fidelity features of an audio file, read as written (channel mean, resampled to SAMPLE_RATE).

    Clipping is counted on the file's own samples in every channel, before resampling and the channel mean (which
    would round full-scale flats off or hide one clipped channel)."""
    from main.analysis.clips import load_audio

    raw, rate = load_audio(path, mono=False)
    audio, _ = load_audio(path, SAMPLE_RATE)
    features = audio_features(audio, SAMPLE_RATE)
    features.peak = float(np.abs(raw).max())
    features.clipped_samples = int((np.abs(raw) >= CLIP_LEVEL).sum())
    return features


class FeatureCache:
    """File features computed once per path (the reference clips serve every set)."""

    def __init__(self) -> None:
        self._features: dict[str, ClipFeatures] = {}

    def __call__(self, paths: Sequence[PathLike]) -> list[ClipFeatures]:
        """Features of `paths`, in order."""
        for path in paths:
            if str(path) not in self._features:
                self._features[str(path)] = file_features(path)
        return [self._features[str(p)] for p in paths]


def wilson(successes: int, total: int) -> Optional[list[float]]:
    """The 95% Wilson interval of a proportion (None without trials)."""
    from main.analysis.latent_species import wilson_interval

    return list(wilson_interval(successes, total)) if total else None


def clipping(features: Sequence[ClipFeatures]) -> dict[str, Any]:
    """Share of clips that reach full scale (with its 95% interval), peak levels and clipped samples."""
    clipped = sum(f.clipped_samples > 0 for f in features)
    peaks = np.array([f.peak for f in features])
    return {"n_clips": len(features), "clipped_clips": clipped,
            "clipped_fraction": clipped / len(features) if features else float("nan"),
            "clipped_ci95": wilson(clipped, len(features)),
            "peak_median": float(np.median(peaks)) if len(peaks) else float("nan"),
            "peak_max": float(peaks.max()) if len(peaks) else float("nan"),
            "clipped_samples_max": max((f.clipped_samples for f in features), default=0)}


def _by_species(features: Sequence[ClipFeatures], species: Sequence[str]) -> dict[str, list[ClipFeatures]]:
    groups: dict[str, list[ClipFeatures]] = {}
    for f, s in zip(features, species):
        groups.setdefault(str(s), []).append(f)
    return groups


def noise_floor(features: Sequence[ClipFeatures], species: Sequence[str], reference: Sequence[ClipFeatures],
                reference_species: Sequence[str], bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The set's noise floor (below its syllables) against the real clips of the same species, in dB (mean over
    clips of their floor minus the mean real floor of their species: 0 for the real clips themselves), with a
    bootstrap 95% interval over clips."""
    real = {s: float(np.mean([f.floor_db for f in group]))
            for s, group in _by_species(reference, reference_species).items()}
    differences = np.array([f.floor_db - real[str(s)] for f, s in zip(features, species) if str(s) in real])
    if len(differences) == 0:
        return {"noise_floor_db_vs_real": float("nan"), "n_clips": 0, "ci95": None}
    rng = np.random.default_rng(seed)
    means = differences[rng.integers(0, len(differences), (bootstrap, len(differences)))].mean(axis=1)
    return {"noise_floor_db_vs_real": float(differences.mean()), "n_clips": int(len(differences)),
            "ci95": [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))],
            "floor_db_median": float(np.median([f.floor_db for f in features]))}


def rhythm_summary(features: Sequence[ClipFeatures]) -> dict[str, Any]:
    """Syllable rate (syllables per second of audio, pooled) and median syllable and gap durations of clips."""
    seconds = sum(f.seconds for f in features)
    syllables = [d for f in features for d in f.syllable_s]
    gaps = [d for f in features for d in f.gap_s]
    return {"n_clips": len(features), "rate": sum(f.syllables for f in features) / seconds if seconds else 0.0,
            "syllable_s": float(np.median(syllables)) if syllables else None,
            "gap_s": float(np.median(gaps)) if gaps else None}


def _log2_ratio(value: Optional[float], real: Optional[float]) -> Optional[float]:
    if value is None or real is None or value <= 0 or real <= 0:
        return None
    return abs(math.log2(value / real))


def rhythm(features: Sequence[ClipFeatures], species: Sequence[str], reference: Sequence[ClipFeatures],
           reference_species: Sequence[str]) -> dict[str, Any]:
    """Per species, the set's syllable rate and durations against the real clips of that species: the number of
    species whose rate is within 20% of the real rate, and the mean log2 distance (rate, syllables, gaps)."""
    real = {s: rhythm_summary(group) for s, group in _by_species(reference, reference_species).items()}
    per_species: dict[str, Any] = {}
    for name, group in sorted(_by_species(features, species).items()):
        if name not in real:
            continue
        own, ref = rhythm_summary(group), real[name]
        # a set with no syllable where real clips have them is as far off as it gets: its rate is 0
        within = ref["rate"] > 0 and abs(own["rate"] / ref["rate"] - 1.0) <= WITHIN
        distances = [d for d in (_log2_ratio(own["rate"], ref["rate"]), _log2_ratio(own["syllable_s"],
                     ref["syllable_s"]), _log2_ratio(own["gap_s"], ref["gap_s"])) if d is not None]
        per_species[name] = {**own, "real_rate": ref["rate"], "real_syllable_s": ref["syllable_s"],
                             "real_gap_s": ref["gap_s"], "rate_within_20pct": bool(within),
                             "log2_distance": float(np.mean(distances)) if distances else None}
    within = sum(e["rate_within_20pct"] for e in per_species.values())
    distances = [e["log2_distance"] for e in per_species.values() if e["log2_distance"] is not None]
    return {"species_within_20pct": within, "n_species": len(per_species),
            "log2_distance": float(np.mean(distances)) if distances else None, "per_species": per_species}


def matched_subsets(species: Sequence[str], reference_species: Sequence[str], repeats: int,
                    seed: int = 0) -> list[np.ndarray]:
    """`repeats` random subsets of the reference indices with the species mix of `species` (per species as many
    clips as the set has, at most as many as the reference has)."""
    wanted: dict[str, int] = {}
    for s in species:
        wanted[str(s)] = wanted.get(str(s), 0) + 1
    pools = {s: np.flatnonzero(np.asarray(reference_species, dtype=object) == s) for s in wanted}
    rng = np.random.default_rng(seed)
    subsets = []
    for _ in range(repeats):
        picked = [rng.choice(pool, min(wanted[s], len(pool)), replace=False) for s, pool in pools.items() if len(pool)]
        subsets.append(np.sort(np.concatenate(picked)) if picked else np.array([], dtype=np.int64))
    return subsets


def fad_ratio(embeddings: np.ndarray, species: Sequence[str], reference: np.ndarray,
              reference_species: Sequence[str], test: np.ndarray, repeats: int = 10,
              seed: int = 0) -> dict[str, Any]:
    """FAD of `embeddings` to `test` over the floor: the mean FAD to `test` of reference subsets with the same
    species mix and N. The interval is the 2.5-97.5 percentile range of FAD / floor over the subsets."""
    from main.analysis.fad import FrechetToReference, gaussian_stats

    to_test = FrechetToReference(gaussian_stats(test))
    fad = to_test.distance(gaussian_stats(embeddings))
    subsets = [idx for idx in matched_subsets(species, reference_species, repeats, seed) if len(idx) > 1]
    if not subsets:
        return {"fad": fad, "floor": None, "ratio": None, "ci95": None, "n": len(embeddings), "n_floor": 0}
    floors = np.array([to_test.distance(gaussian_stats(reference[idx])) for idx in subsets])
    ratios = fad / floors
    return {"fad": fad, "floor": float(floors.mean()), "ratio": fad / float(floors.mean()),
            "ci95": [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))],
            "n": len(embeddings), "n_floor": len(subsets[0]), "repeats": len(subsets), "n_test": len(test)}


def fidelity(features: Sequence[ClipFeatures], species: Sequence[str], reference: Sequence[ClipFeatures],
             reference_species: Sequence[str], fad: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """Every fidelity figure of one set against the real reference clips, flat keys first (for scripts)."""
    clip = clipping(features)
    floor = noise_floor(features, species, reference, reference_species)
    beat = rhythm(features, species, reference, reference_species)
    return {"fad_birdnet_ratio": fad.get("ratio") if fad else None,
            "clipped_fraction": clip["clipped_fraction"],
            "noise_floor_db_vs_real": floor["noise_floor_db_vs_real"],
            "rhythm_species_within_20pct": beat["species_within_20pct"],
            "rhythm_n_species": beat["n_species"],
            "rhythm_log2_distance": beat["log2_distance"],
            "n_clips": len(features),
            "fad_birdnet": dict(fad) if fad else None, "clipping": clip, "noise_floor": floor, "rhythm": beat}
