"""Spectral images in a DiffAE's reconstructions: the level at f0 +- k * (rate / LT stride) against the level at
each clip's strongest frequency f0, in dB, per species (median over its clips), next to the originals'.

    python benchmarks/decoder_images.py --manifest demo/data/synthetic/<hash>/manifest.csv \\
        --reconstructions demo/eval/reconstructions [--reconstructions other/reconstructions ...]

A decoder that predicts audio through a learned transform (LTPlugin) hopping `stride` samples leaves copies of
every tone at multiples of rate / stride (2 kHz for the demo's 16 samples at 32 kHz) wherever its frame
coefficients are off: they are the tones heard under each syllable (BENCHMARKS.md, "Sound fidelity").
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

N_FFT = 4096
HOP = 1024
SEARCH_HZ = 60.0  # half-width around each expected image: the strongest bin within it


def power_frames(x: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """Hann-windowed power spectra of the frames of `x` [frames, bins]."""
    frames = np.lib.stride_tricks.sliding_window_view(x, n_fft)[::hop] * np.hanning(n_fft)
    return np.abs(np.fft.rfft(frames, axis=1)) ** 2


def mean_spectrum(x: np.ndarray) -> np.ndarray:
    """Mean power spectrum of `x` (mono) at the fine resolution the images need (N_FFT)."""
    return power_frames(x, N_FFT, HOP).mean(0)


def image_levels(reference: np.ndarray, audio: np.ndarray, rate: int, spacing_hz: float,
                 orders: tuple[int, ...] = (-2, -1, 1, 2)) -> dict[int, float]:
    """dB of `audio`'s strongest bin near f0 + k * spacing_hz against its bin at f0, where f0 is the reference's
    strongest frequency; orders that fall outside 300 Hz .. rate/2 - 500 Hz are left out."""
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / rate)
    f0 = freqs[np.argmax(mean_spectrum(reference))]
    power = mean_spectrum(audio)

    def level(centre: float) -> float:
        return float(10 * np.log10(power[np.abs(freqs - centre) <= SEARCH_HZ].max() + 1e-20))

    return {k: level(f0 + k * spacing_hz) - level(f0) for k in orders
            if 300 <= f0 + k * spacing_hz <= rate / 2 - 500}


def strongest_image(levels: dict[int, float]) -> float:
    """The loudest image of a clip (dB against f0); -inf when no order fits the band."""
    return max(levels.values(), default=float("-inf"))


def transform_images(diffae_path: str, tones_hz: tuple[float, ...] = (1100.0, 3100.0, 5227.0, 7055.0),
                     rate: int = 32000) -> dict[float, float]:
    """The loudest image (dB vs the tone) after the DiffAE's LT synthesis of its own LT analysis of a pure tone: a
    transform that reconstructs (the Fourier frame it starts as) leaves none; one whose filters drifted does."""
    import torch

    from main.nets.weights import load_model

    diffae, _ = load_model(diffae_path, "diffae")
    analysis, synthesis = diffae.net.blocks[0], diffae.net.blocks[1]
    t = torch.arange(2 ** 15) / rate
    levels = {}
    for tone_hz in tones_hz:
        tone = (0.5 * torch.sin(2 * torch.pi * tone_hz * t)).expand(1, analysis.in_channels, -1)
        with torch.no_grad():
            audio = synthesis(analysis(tone.to(analysis.weight.dtype))).float()[0, 0, 1000:-1000].double().numpy()
        reference = tone[0, 0, 1000:-1000].double().numpy()
        levels[tone_hz] = strongest_image(image_levels(reference, audio, rate, rate / analysis.stride[0]))
    return levels


def main(argv: Optional[list[str]] = None) -> None:
    """Print each species' loudest image (median over clips) in the originals and in each reconstructions folder."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="the data set's manifest.csv")
    parser.add_argument("--transform-of", help="also: the images a DiffAE's LT adds to a pure tone by itself")
    parser.add_argument("--reconstructions", action="append", required=True,
                        help="a `main.analysis reconstruct` folder (clips.csv names each clip's source); repeatable")
    parser.add_argument("--spacing-hz", type=float, default=2000.0, help="rate / LT stride (default 32000 / 16)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
    from benchmarks.fad_sensitivity import mono
    from main.data.manifest import read_manifest

    sources = {Path(r["path"]).name: r for r in read_manifest(args.manifest)}
    table: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    originals: dict[str, np.ndarray] = {}  # each original read once, its own images counted once
    names = ["originals", *args.reconstructions]
    for folder in args.reconstructions:
        with open(Path(folder) / "clips.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["source"] in sources]
        if not rows:
            raise SystemExit(f"{folder}: no clip whose source is in {args.manifest}")
        for row in rows:
            source = sources[row["source"]]
            species = source["sci_name"]
            if row["source"] not in originals:
                original, rate = mono(source["path"])
                originals[row["source"]] = original
                table[species]["originals"].append(strongest_image(image_levels(original, original, rate,
                                                                                args.spacing_hz)))
            original = originals[row["source"]]
            audio, rate = mono(str(Path(folder) / row["file"]))
            n = min(len(original), len(audio))
            table[species][folder].append(strongest_image(image_levels(original[:n], audio[:n], rate,
                                                                       args.spacing_hz)))
    print(f"loudest image at f0 +- k * {args.spacing_hz:.0f} Hz (k = 1, 2), dB against f0; median over clips")
    print("| species | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for species in sorted(table):
        cells = [f"{np.median(table[species][n]):.1f}" if table[species][n] else "–" for n in names]
        print(f"| {species} | " + " | ".join(cells) + " |")
    overall = [f"{np.median([v for s in table for v in table[s][n]]):.1f}" for n in names]
    print("| all clips | " + " | ".join(overall) + " |")
    if args.transform_of:
        levels = transform_images(args.transform_of)
        print(f"{args.transform_of}: LT synthesis of its analysis of a tone, loudest image: "
              + ", ".join(f"{hz:.0f} Hz {db:.1f} dB" for hz, db in levels.items()))


if __name__ == "__main__":
    main()
