"""Procedural "synthetic bird songs": invented species and the recordings they sing.

Ten invented species, each singing in its own frequency band (0.4 to 7.6 kHz, so any sample rate
>= 16 kHz holds them) with its own contour: hoot, harmonic stack, drumming pulses, whistle,
down-sweep, warble (vibrato), up-sweep chirps, trill, buzz (amplitude-modulated noise band) and high
pipes. Songs are sequences of syllables (duration, rate and count per species) separated by pauses.
Per recording: pitch shift, tempo, amplitude, stereo pan and delay, pink background noise level and,
in ~20% of recordings, a quieter second species in the background (listed in ``also``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

MIN_SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Species:
    """An invented species and the parameters of its song."""

    sci_name: str
    en_name: str
    contour: str  # hoot | harmonic | pulse | whistle | downsweep | warble | upsweep | trill | buzz
    f_lo: float  # Hz, lowest fundamental (sweep end points for sweeps)
    f_hi: float  # Hz, highest fundamental
    syllable_s: float  # syllable duration at tempo 1
    rate: float  # syllables per second within a song
    count: tuple[int, int]  # syllables per song, inclusive range
    types: tuple[str, ...]  # Xeno-canto call types
    countries: tuple[str, ...]
    harmonics: tuple[float, ...] = (1.0,)  # relative amplitudes of partials 1, 2, ...
    mod_hz: float = 0.0  # pulse/trill rate, vibrato rate or buzz AM rate


SPECIES: tuple[Species, ...] = (
    Species("Gravis profundus", "Deep Hooter", "hoot", 430, 560, 0.45, 1.4, (2, 4), ("song",),
            ("Portugal", "Spain"), (1.0, 0.3, 0.1)),
    Species("Harmonica cantor", "Harmonic Songster", "harmonic", 760, 880, 0.22, 3.0, (3, 6), ("song",),
            ("France", "Germany"), (1.0, 0.7, 0.5, 0.35)),
    Species("Tympanum pulsator", "Drumming Pulsewing", "pulse", 1050, 1250, 0.6, 1.2, (2, 3), ("drumming",),
            ("Poland", "Czech Republic"), (1.0,), 22.0),
    Species("Synthia fluvialis", "River Synthwhistle", "whistle", 1450, 1750, 0.35, 2.0, (3, 5), ("song",),
            ("Netherlands", "Belgium", "Denmark"), (1.0, 0.08), 6.0),
    Species("Descendra lugubris", "Mournful Downslider", "downsweep", 1950, 2500, 0.28, 2.5, (3, 5), ("call",),
            ("Italy", "Greece")),
    Species("Modulata vibrans", "Warbling Vibrato", "warble", 2750, 3250, 0.4, 1.8, (2, 4), ("song",),
            ("Sweden", "Norway"), (1.0,), 14.0),
    Species("Ascendor rapidus", "Swift Upsweeper", "upsweep", 3600, 4600, 0.09, 7.0, (5, 9),
            ("call", "flight call"), ("Brazil", "Peru")),
    Species("Trillaria minor", "Lesser Trillbird", "trill", 5000, 5400, 0.5, 1.5, (2, 3), ("song",),
            ("Kenya", "Tanzania"), (1.0,), 35.0),
    Species("Bombyx stridulans", "Buzzing Stridulet", "buzz", 5800, 6600, 0.5, 1.4, (2, 3), ("call",),
            ("Australia",), (1.0,), 45.0),
    Species("Pipilo altissimus", "High Piper", "whistle", 7000, 7400, 0.06, 5.0, (4, 8), ("call", "alarm call"),
            ("Canada", "United States"), (1.0,), 0.0),
)


def species_names(num_species: Optional[int] = None) -> list[str]:
    """Scientific names of the synthetic species (the first `num_species`, default all)."""
    return [s.sci_name for s in species_subset(num_species)]


def species_subset(num_species: Optional[int]) -> tuple[Species, ...]:
    """The first `num_species` species, validated."""
    if num_species is None:
        return SPECIES
    if not 1 <= num_species <= len(SPECIES):
        raise ValueError(f"num_species must be in 1..{len(SPECIES)}, got {num_species}")
    return SPECIES[:num_species]


# ----------------------------------------------------------------------------- synthesis


def _ramp_envelope(n: int, sample_rate: int) -> np.ndarray:
    """A flat envelope with raised-cosine attack and release (<= 10 ms, <= a quarter of the syllable)."""
    env = np.ones(n)
    ramp = max(1, min(int(0.01 * sample_rate), n // 4))
    shape = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
    env[:ramp] = shape
    env[n - ramp:] = np.minimum(env[n - ramp:], shape[::-1])
    return env


def _band_noise(n: int, lo: float, hi: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise band-limited to [lo, hi] Hz (FFT masking)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spectrum[(freqs < lo) | (freqs > hi)] = 0.0
    noise = np.fft.irfft(spectrum, n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def _pink_noise(shape: tuple[int, int], sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f noise (flat below 100 Hz) of `shape` [signals, samples]."""
    n = shape[-1]
    spectrum = np.fft.rfft(rng.standard_normal(shape), axis=-1)
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(n, 1.0 / sample_rate), 100.0))
    noise = np.fft.irfft(spectrum, n, axis=-1)
    return noise / (np.sqrt(np.mean(noise**2, axis=-1, keepdims=True)) + 1e-12)


def _syllable(
    species: Species, n: int, sample_rate: int, pitch: float, rng: np.random.Generator,
    band_noise: Optional[np.ndarray],
) -> np.ndarray:
    """One syllable of `n` samples (peak about 1) of `species` at pitch factor `pitch`."""
    t = np.arange(n) / sample_rate
    u = np.arange(n) / max(n - 1, 1)
    lo, hi = species.f_lo * pitch, species.f_hi * pitch
    f0 = rng.uniform(lo, hi)
    gate = np.ones(n)
    contour = species.contour
    if contour == "hoot":
        freq = f0 * (1.0 + 0.06 * np.sin(np.pi * u))
    elif contour == "harmonic":
        freq = f0 * (1.0 - 0.08 * u)
    elif contour == "whistle":
        freq = f0 * (1.0 + 0.01 * np.sin(2 * np.pi * species.mod_hz * t))
    elif contour == "downsweep":
        freq = hi * (lo / hi) ** u
    elif contour == "upsweep":
        freq = lo * (hi / lo) ** u
    elif contour == "warble":
        freq = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.sin(2 * np.pi * species.mod_hz * t + rng.uniform(0, 2 * np.pi))
    elif contour in ("trill", "pulse"):
        cycle = (t * species.mod_hz) % 1.0
        freq = f0 * (1.0 - (0.04 if contour == "trill" else 0.0) * cycle)
        gate = (0.5 - 0.5 * np.cos(2 * np.pi * cycle)) ** (4 if contour == "trill" else 2)
    elif contour == "buzz":
        if band_noise is None:
            raise ValueError("buzz syllables need a band-noise signal")
        am = 0.55 + 0.45 * np.sin(2 * np.pi * species.mod_hz * t)
        return band_noise[:n] * am * _ramp_envelope(n, sample_rate) / 3.0
    else:
        raise ValueError(f"unknown contour {contour!r} for {species.sci_name}")
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate + rng.uniform(0, 2 * np.pi)
    nyquist = 0.5 * sample_rate
    tone = np.zeros(n)
    for k, amp in enumerate(species.harmonics, start=1):
        if amp > 0 and k * float(freq.max()) < 0.95 * nyquist:
            tone += amp * np.sin(k * phase)
    tone /= sum(species.harmonics)
    return tone * gate * _ramp_envelope(n, sample_rate)


def _song_track(
    species: Species, n_total: int, sample_rate: int, rng: np.random.Generator, pitch: float, tempo: float,
    max_songs: Optional[int] = None,
) -> np.ndarray:
    """A mono track of `n_total` samples: songs of `species` separated by pauses, peak normalised to 1."""
    track = np.zeros(n_total)
    band = None
    if species.contour == "buzz":
        band = _band_noise(n_total, species.f_lo * pitch, species.f_hi * pitch, sample_rate, rng)
    duration = n_total / sample_rate
    if max_songs is None:
        pos = rng.uniform(0.0, min(0.25, 0.1 * duration))
    else:  # an occasional singer (background): starts anywhere
        pos = rng.uniform(0.0, 0.7 * duration)
    interval = 1.0 / (species.rate * tempo)
    songs = 0
    while pos < duration and (max_songs is None or songs < max_songs):
        songs += 1
        for _ in range(int(rng.integers(species.count[0], species.count[1] + 1))):
            start = int(pos * sample_rate)
            if start >= n_total:
                break
            length = species.syllable_s / tempo * rng.uniform(0.9, 1.1)
            n = min(max(int(length * sample_rate), 16), n_total - start)
            source = band[start:start + n] if band is not None else None
            track[start:start + n] += _syllable(species, n, sample_rate, pitch, rng, source)
            pos += max(interval, length * 1.15) * rng.uniform(0.95, 1.05)
        pos += rng.uniform(0.35, 0.9)
    peak = float(np.abs(track).max())
    return track / peak if peak > 0 else track


def _place(track: np.ndarray, channels: int, rng: np.random.Generator) -> np.ndarray:
    """Pan a mono track into `channels` channels with a small inter-channel delay; shape [channels, n]."""
    if channels == 1:
        return track[None, :].copy()
    angle = np.pi / 4 + rng.uniform(-0.3, 0.3)
    gains = np.array([np.cos(angle), np.sin(angle)]) * np.sqrt(2)
    out = np.zeros((channels, track.shape[0]))
    delay = int(rng.integers(0, 9))
    for c in range(channels):
        shifted = track if c % 2 == 0 or delay == 0 else np.concatenate([np.zeros(delay), track[:-delay]])
        out[c] = gains[c % 2] * shifted
    return out


def synthesize_recording(
    species_index: int,
    rng: np.random.Generator,
    duration_s: float = 3.0,
    sample_rate: int = 32000,
    channels: int = 2,
    background_index: Optional[int] = None,
) -> np.ndarray:
    """One recording of SPECIES[species_index] (optionally with a quieter background species), [frames, channels]."""
    if sample_rate < MIN_SAMPLE_RATE:
        raise ValueError(f"sample_rate must be >= {MIN_SAMPLE_RATE} Hz (songs reach 7.6 kHz), got {sample_rate}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    n = int(round(duration_s * sample_rate))
    if n <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    main = SPECIES[species_index]
    pitch = 2.0 ** rng.normal(0.0, 0.02)
    tempo = rng.uniform(0.85, 1.15)
    mix = _place(_song_track(main, n, sample_rate, rng, pitch, tempo), channels, rng)
    mix *= rng.uniform(0.3, 0.8)
    if background_index is not None:
        bg = SPECIES[background_index]
        bg_track = _song_track(bg, n, sample_rate, rng, 2.0 ** rng.normal(0.0, 0.02), rng.uniform(0.85, 1.15), 1)
        mix += _place(bg_track, channels, rng) * rng.uniform(0.02, 0.06)  # one song, -34 to -24 dB
    noise_level = 10.0 ** rng.uniform(-3.0, -2.5)  # -60 to -50 dBFS RMS
    noise = _pink_noise((channels + 1, n), sample_rate, rng)  # one shared + one per channel
    mix += noise_level * (0.7 * noise[:1] + 0.3 * noise[1:])
    peak = float(np.abs(mix).max())
    if peak > 0.95:
        mix *= 0.95 / peak
    return mix.T.astype(np.float32)
