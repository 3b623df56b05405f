"""The output frame test, no training: how much of a coefficient error comes back as spectral images (copies at
f0 +- rate / hop) and as broadband floor, at a hop of 16 samples (32 kHz), through a non-redundant frame (window =
hop, rectangular: the shape of the original's LT, 64 / 64) and through sine-windowed STFT frames of 2x (window 32: the
demo DiffAE's LT at its Fourier start) to 16x redundancy, with and without magnitude compression (errors made on
|c|^p, as Music2Latent predicts).

    python benchmarks/frame_images.py [--error-db -30] [--tones 2300 3900 5100 7700]

Three kinds of error, each at --error-db: `relative` (independent per coefficient, proportional to it), `gain` (each
bin's gain off by a fixed complex factor, the same in every frame: a systematic error) and `additive` (white, against
the largest coefficient). Figures: the loudest image within +-150 Hz of f0 +- 2 kHz and the median floor more than
300 Hz away from the tone and its images, both in dB against the tone; median over the tones.
"""

from __future__ import annotations

import argparse
from typing import Optional

import numpy as np

RATE, HOP = 32000, 16


def analysis(x: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Frames of `x` every HOP samples times `window`, as rfft coefficients [frames, bins]."""
    frames = np.lib.stride_tricks.sliding_window_view(x, len(window))[::HOP]
    return np.fft.rfft(frames * window, axis=1)


def synthesis(coefficients: np.ndarray, window: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add of the frames of `coefficients`, normalised by the summed squared window."""
    frames = np.fft.irfft(coefficients, n=len(window), axis=1) * window
    out, norm = np.zeros(length), np.zeros(length)
    for i, frame in enumerate(frames):
        out[i * HOP: i * HOP + len(window)] += frame
        norm[i * HOP: i * HOP + len(window)] += window ** 2
    return out / np.maximum(norm, 1e-8)


def with_error(c: np.ndarray, kind: str, error_db: float, power: float, rng: np.random.Generator) -> np.ndarray:
    """`c` with an error of `kind` at `error_db`, made on the compressed magnitude |c|^power (phase kept)."""
    magnitude, phase = np.abs(c) ** power, np.exp(1j * np.angle(c))
    z = magnitude * phase
    size = 10 ** (error_db / 20)
    noise = (rng.standard_normal(c.shape) + 1j * rng.standard_normal(c.shape)) / np.sqrt(2)
    if kind == "relative":
        z = z * (1 + size * noise)
    elif kind == "gain":
        z = z * (1 + size * noise[:1])  # one factor per bin, every frame
    else:
        z = z + size * np.abs(z).max() * noise
    return np.abs(z) ** (1 / power) * np.exp(1j * np.angle(z))


def levels(audio: np.ndarray, f0: float) -> tuple[float, float]:
    """Loudest image at f0 +- 2 kHz and the median floor away from tone and images, in dB against the tone."""
    segment = audio[4096:-4096] * np.hanning(len(audio) - 8192)
    power = np.abs(np.fft.rfft(segment)) ** 2
    freqs = np.fft.rfftfreq(len(segment), 1 / RATE)
    tone = power[np.abs(freqs - f0) <= 150].max()
    images = [power[np.abs(freqs - f) <= 150].max() for f in (f0 - RATE / HOP, f0 + RATE / HOP) if 300 < f < RATE / 2]
    away = np.ones_like(freqs, dtype=bool)
    for f in (f0, f0 - RATE / HOP, f0 + RATE / HOP):
        away &= np.abs(freqs - f) > 300
    return 10 * np.log10(max(images) / tone), 10 * np.log10(np.median(power[away & (freqs > 300)]) / tone)


def main(argv: Optional[list[str]] = None) -> None:
    """Print images and floor for every frame, compression and error kind."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--error-db", type=float, default=-30.0)
    parser.add_argument("--tones", type=float, nargs="+", default=[2300.0, 3900.0, 5100.0, 7700.0])
    args = parser.parse_args(argv)
    t = np.arange(RATE) / RATE
    frames = {"1x (rectangular 16: the original's LT shape)": np.ones(16)}
    frames.update({f"{w // HOP}x (sine {w}{': the demo LT' if w == 32 else ''})": np.sqrt(np.hanning(w + 2)[1:-1])
                   for w in (32, 64, 128, 256)})
    print(f"errors at {args.error_db:g} dB; loudest image / floor, dB against the tone (median over "
          f"{len(args.tones)} tones)\n")
    print("| frame | compression | relative | gain (systematic) | additive |\n|---|---|---|---|---|")
    for name, window in frames.items():
        for power in (1.0, 0.5):
            cells = []
            for kind in ("relative", "gain", "additive"):
                figures = []
                for i, f0 in enumerate(args.tones):
                    tone = 0.5 * np.sin(2 * np.pi * f0 * t)
                    c = with_error(analysis(tone, window), kind, args.error_db, power, np.random.default_rng(i))
                    figures.append(levels(synthesis(c, window, len(tone)), f0))
                image, floor = np.median(figures, axis=0)
                cells.append(f"{image:.0f} / {floor:.0f}")
            compression = "none" if power == 1 else f"magnitude^{power:g}"
            print(f"| {name} | {compression} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
