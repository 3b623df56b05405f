"""How clean is a DiffAE decoder's clean estimate at each noise level, given the true latent? Two views, median
over one test clip per species:

1. teacher-forced: one denoising step from the real clip diffused to each level (what training sees);
2. the sampler's own: the clean estimate at each step of the demo's decoding (DPM-Solver++, power-2 schedule),
   beside the teacher-forced estimate at the same level and the sampler's noisy state.

Columns: the tone-to-broadband ratio within the syllables (dB; the real clip's is the ceiling), the loudest spectral
image at f0 +- 2 kHz (benchmarks/decoder_images.py; the LT hop of 16 samples at 32 kHz), and the error against the
real clip split into in-band (the clip's tonal bins) and out-of-band (the other bins above 500 Hz), in dB against
the clip's tonal power.

    python benchmarks/clean_estimate_noise.py --manifest demo/data/synthetic/<hash>/manifest.csv \\
        --diffae pretrained/diffae_demo.safetensors [--trajectory-steps 16]

Where teacher-forced estimates at low noise levels are clean and the sampler's are not, the error was laid down at
higher levels and the decoder, trained only on real audio plus noise, keeps it (BENCHMARKS.md, "Sound fidelity").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.decoder_images import image_levels, power_frames, strongest_image
from main.analysis.clips import select_rows
from main.analysis.generate import load_clip
from main.data.manifest import read_manifest
from main.diffusion import alpha_beta, clean_estimate, sample
from main.inference.decoding import DECODING_SIGMA_POWER, diffae_data_scale
from main.nets.weights import load_model

NOISE_LEVELS = (0.6, 0.3, 0.15, 0.08, 0.04, 0.02, 0.01, 0.005)


def syllable_bins(real_power: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The real clip's syllable frames, its tonal bins and its other bins above 500 Hz (boolean masks), from its
    `power_frames`."""
    energy = real_power.sum(1)
    active = energy > 0.1 * np.median(energy[energy > np.percentile(energy, 80)])
    mean_spectrum = real_power[active].mean(0)
    tone = mean_spectrum > mean_spectrum.max() * 1e-2
    return active, tone, ~tone & (np.fft.rfftfreq(1024, 1 / rate) > 500)


def tone_to_broadband_db(real: np.ndarray, other: np.ndarray, rate: int) -> float:
    """Within the real clip's syllables: the power of its tonal bins over the median power of the other bins above
    500 Hz, in dB, measured on `other` with the real clip's syllables and bins."""
    active, tone, rest = syllable_bins(power_frames(real), rate)
    frames = power_frames(other)[active]
    return float(10 * np.log10(frames[:, tone].sum(1).mean() / np.median(frames[:, rest], axis=1).mean()))


def in_and_out_of_band_error_db(real: np.ndarray, other: np.ndarray, rate: int) -> tuple[float, float]:
    """Within the real clip's syllables: the power of `other - real` in the clip's tonal bins and in its other bins
    above 500 Hz, each in dB against the clip's tonal power (the bins and frames of `tone_to_broadband_db`)."""
    real_power = power_frames(real)
    active, tone, rest = syllable_bins(real_power, rate)
    error_power = power_frames(other - real)[active]
    signal = real_power[active][:, tone].sum()
    return (float(10 * np.log10(error_power[:, tone].sum() / signal)),
            float(10 * np.log10(error_power[:, rest].sum() / signal)))


def summary(clips: torch.Tensor, estimates: torch.Tensor, rate: int) -> str:
    """Median over clips of: tone-to-broadband, loudest image, in-band and out-of-band error (table cells)."""
    mono = lambda x: x.mean(0).double().numpy()  # noqa: E731
    pairs = [(mono(c), mono(e)) for c, e in zip(clips, estimates)]
    ratio = np.median([tone_to_broadband_db(c, e, rate) for c, e in pairs])
    image = np.median([strongest_image(image_levels(c, e, rate, rate / 16)) for c, e in pairs])
    errors = np.median([in_and_out_of_band_error_db(c, e, rate) for c, e in pairs], axis=0)
    return f"{ratio:.1f} | {image:.1f} | {errors[0]:.1f} | {errors[1]:.1f}"


def header(first: str, *groups: str) -> str:
    """A markdown header: `first`, then the four `summary` columns of each group."""
    cells = [f"{g}: {c}" for g in groups for c in ("tone/bb", "image", "in-band err", "out-of-band err")]
    return "| " + " | ".join([first, *cells]) + " |\n|" + "---|" * (1 + len(cells))


def main(argv: Optional[list[str]] = None) -> None:
    """Print both tables for one DiffAE."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--diffae", required=True, help="a DiffAE .safetensors export")
    parser.add_argument("--seconds", type=float, default=2.048)
    parser.add_argument("--trajectory-steps", type=int, default=16, help="the sampler's steps (the demo's: 16)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    diffae, config = load_model(args.diffae, "diffae")
    diffae = diffae.eval().requires_grad_(False)
    rate, scale = int(config.get("sample_rate", 32000)), diffae_data_scale(diffae)
    rows = select_rows(read_manifest(args.manifest, "test"), None, 1, 0)
    length = int(args.seconds * rate) // 64 * 64
    clips = torch.stack([torch.from_numpy(load_clip(r["path"], rate, args.seconds, 2)) for r in rows])[..., :length]
    noise = torch.randn(clips.shape, generator=torch.Generator().manual_seed(0))
    mono = lambda x: x.mean(0).double().numpy()  # noqa: E731
    print(f"{len(rows)} test clips (one per species); real: "
          f"{np.median([tone_to_broadband_db(mono(c), mono(c), rate) for c in clips]):.1f} dB")
    print("\n1. teacher-forced: tone / broadband (dB), loudest image (dB against f0), in-band and out-of-band error "
          "(dB against the tone)\n\n" + header("noise level", "noisy input", "clean estimate"))
    with torch.no_grad():
        channels = [None] * diffae.inject_depth + [diffae.encode(clips)]

        def teacher_forced(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            alpha, beta = (float(v) for v in alpha_beta(sigma.double()))
            noisy = alpha * clips * scale + beta * noise
            velocity = diffae.net(noisy, sigma.expand(len(rows)), channels=channels)
            return noisy / scale, (alpha * noisy - beta * velocity) / scale

        for level in NOISE_LEVELS:
            noisy, estimate = teacher_forced(torch.tensor(level))
            print(f"| {level} | {summary(clips, noisy, rate)} | {summary(clips, estimate, rate)} |")

        steps: list[tuple[float, torch.Tensor, torch.Tensor]] = []

        def recording(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
            velocity = diffae.net(x, sigmas, channels=channels)
            steps.append((float(sigmas[0]), x / scale, clean_estimate(x, sigmas, velocity) / scale))
            return velocity

        sample(recording, noise, args.trajectory_steps, "dpmpp-2m", sigma_power=DECODING_SIGMA_POWER)
        print(f"\n2. the sampler's own estimates (DPM-Solver++, {args.trajectory_steps} steps, power-"
              f"{DECODING_SIGMA_POWER:g} schedule), the same figures\n\n"
              + header("noise level", "sampler's state", "sampler's estimate", "teacher-forced"))
        for level, state, estimate in steps:
            print(f"| {level:.4f} | {summary(clips, state, rate)} | {summary(clips, estimate, rate)} | "
                  f"{summary(clips, teacher_forced(torch.tensor(level))[1], rate)} |")

if __name__ == "__main__":
    main()
