"""How loud the spectral images of a decoder's frame errors are, per LT frame: the real test clips go through each
Fourier frame's analysis, every frequency bin's coefficients are scaled by a random gain error (as a decoder's
estimate that is a little off in each bin), and the synthesis is measured like a reconstruction.

    python benchmarks/frame_images.py --manifest demo/data/synthetic/<hash>/manifest.csv

Images at f0 +- k * rate / hop come from bins whose synthesis window still passes them: the 2x sine frame (window 32
at hop 16, the demo DiffAE until it moved to the 4x frame) passes +-2 kHz within its main lobe; a Hann window
twice as long at the same hop puts them in its side lobes (BENCHMARKS.md, "Sound fidelity").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.decoder_images import image_levels, strongest_image
from benchmarks.fad_sensitivity import mono
from main.data.manifest import read_manifest
from main.nets.fourier import fourier_frame

FRAMES = {"32 at hop 16 (sine, 2x)": (32, 16), "64 at hop 16 (Hann, 4x)": (64, 16), "32 at hop 8 (Hann, 4x)": (32, 8)}
GainError = Callable[[tuple[int, ...], np.random.Generator], np.ndarray]


def constant_per_bin(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """One gain error per bin for the whole clip."""
    return rng.standard_normal((1, shape[1], 1))


def per_bin_and_frame(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """An independent gain error in every bin of every frame."""
    return rng.standard_normal(shape)


def slowly_varying(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A gain error per bin that drifts over about 9 frames (unit variance)."""
    noise = torch.from_numpy(rng.standard_normal(shape))
    return (F.avg_pool1d(noise, 9, 1, 4, count_include_pad=False) * 3).numpy()


ERRORS: dict[str, GainError] = {"constant per bin": constant_per_bin, "per bin and frame": per_bin_and_frame,
                                "slowly varying": slowly_varying}


def with_gain_errors(x: np.ndarray, window: int, hop: int, error: np.ndarray | None, size: float) -> np.ndarray:
    """`x` through the Fourier frame's analysis, coefficients scaled by (1 + size * error), and its synthesis."""
    frame = fourier_frame(window, hop).double()[:, None]
    pad = window // 2 - hop // 2  # as the LT plugin pads
    signal = torch.from_numpy(x)[None, None]
    coefficients = F.conv1d(F.pad(signal, (pad, pad), mode="reflect"), frame, stride=hop)
    if error is not None:
        coefficients = coefficients * (1 + size * torch.from_numpy(error))
    return F.conv_transpose1d(coefficients, frame, stride=hop, padding=pad)[0, 0].numpy()


def main(argv: Optional[list[str]] = None) -> None:
    """Print the median loudest image and SNR of each frame under each kind of gain error."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="the data set's manifest.csv (its test split is used)")
    parser.add_argument("--size", type=float, default=0.2, help="standard deviation of the gain errors")
    parser.add_argument("--every", type=int, default=3, help="use every n-th test clip")
    args = parser.parse_args(argv)
    clips = [mono(row["path"]) for row in read_manifest(args.manifest, "test")[::args.every]]
    print(f"{len(clips)} test clips, gain errors of sd {args.size}; loudest image at f0 +- k * rate / hop "
          "(dB vs f0) and SNR (dB), medians")
    print("| gain error | frame | images | SNR |\n|---|---|---|---|")
    for error_name, draw in [("none", None), *ERRORS.items()]:
        for frame_name, (window, hop) in FRAMES.items():
            rng = np.random.default_rng(0)
            images, snrs = [], []
            for x, rate in clips:
                shape = (1, window, (len(x) + 2 * (window // 2 - hop // 2) - window) // hop + 1)
                y = with_gain_errors(x, window, hop, None if draw is None else draw(shape, rng), args.size)
                n = min(len(x), len(y))
                images.append(strongest_image(image_levels(x[:n], y[:n], rate, rate / hop)))
                snrs.append(10 * np.log10(np.sum(x[:n] ** 2) / max(np.sum((x[:n] - y[:n]) ** 2), 1e-20)))
            print(f"| {error_name} | {frame_name} | {np.median(images):.1f} | {np.median(snrs):.1f} |", flush=True)


if __name__ == "__main__":
    main()
