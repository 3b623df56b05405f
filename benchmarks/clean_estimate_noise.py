"""How clean is a DiffAE decoder's clean estimate at each noise level, given the true latent? One denoising step
from the real clip diffused to that level; tone-to-broadband ratio of the estimate within the syllables, in dB
(median over one test clip per species), against the real clip's and the noisy input's, and the loudest spectral
image at f0 +- 2 kHz (benchmarks/decoder_images.py; the LT hop of 16 samples at 32 kHz).

    python benchmarks/clean_estimate_noise.py --manifest demo/data/synthetic/<hash>/manifest.csv \\
        --diffae pretrained/diffae_demo.safetensors

A decoder whose estimate stays far below the real ratio at every level adds that broadband noise under the
syllables however many sampling steps are spent (BENCHMARKS.md, "Sound fidelity").
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
from main.diffusion import alpha_beta
from main.inference.decoding import diffae_data_scale
from main.nets.weights import load_model

NOISE_LEVELS = (0.6, 0.3, 0.15, 0.08, 0.04, 0.02, 0.01, 0.005)


def tone_to_broadband_db(real: np.ndarray, other: np.ndarray, rate: int) -> float:
    """Within the real clip's syllables: the power of its tonal bins over the median power of the other bins above
    500 Hz, in dB, measured on `other` with the real clip's syllables and bins."""
    real_power, other_power = power_frames(real), power_frames(other)
    energy = real_power.sum(1)
    active = energy > 0.1 * np.median(energy[energy > np.percentile(energy, 80)])
    mean_spectrum = real_power[active].mean(0)
    tone = mean_spectrum > mean_spectrum.max() * 1e-2
    rest = ~tone & (np.fft.rfftfreq(1024, 1 / rate) > 500)
    frames = other_power[active]
    return float(10 * np.log10(frames[:, tone].sum(1).mean() / np.median(frames[:, rest], axis=1).mean()))


def main(argv: Optional[list[str]] = None) -> None:
    """Print the tone-to-broadband ratio of the clean estimates at each noise level."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--diffae", required=True, help="a DiffAE .safetensors export")
    parser.add_argument("--seconds", type=float, default=2.048)
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
    print("| noise level | noisy input | clean estimate | loudest image at f0 +- 2 kHz in the estimate (real: "
          f"{np.median([strongest_image(image_levels(mono(c), mono(c), rate, rate / 16)) for c in clips]):.1f} dB) |"
          "\n|---|---|---|---|")
    with torch.no_grad():
        channels = [None] * diffae.inject_depth + [diffae.encode(clips)]
        for level in NOISE_LEVELS:
            sigma = torch.tensor(level)
            alpha, beta = (float(v) for v in alpha_beta(sigma.double()))
            noisy = alpha * clips * scale + beta * noise
            velocity = diffae.net(noisy, sigma.expand(len(rows)), channels=channels)
            estimate = (alpha * noisy - beta * velocity) / scale
            inputs = [tone_to_broadband_db(mono(c), mono(n / scale), rate) for c, n in zip(clips, noisy)]
            estimates = [tone_to_broadband_db(mono(c), mono(e), rate) for c, e in zip(clips, estimate)]
            images = [strongest_image(image_levels(mono(c), mono(e), rate, rate / 16)) for c, e in zip(clips, estimate)]
            print(f"| {level} | {np.median(inputs):.1f} dB | {np.median(estimates):.1f} dB | "
                  f"{np.median(images):.1f} dB |")


if __name__ == "__main__":
    main()
