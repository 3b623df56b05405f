"""Where the demo DiffAE loses pitch: the tanh bottleneck's saturation, the pitch the encoder computes before and
after it, and the pitch error of reconstructions (from pure noise, and from the real audio noised to t0).

    python benchmarks/bench_diffae_pitch.py [--diffae pretrained/diffae_demo.safetensors] [--per-species 4]

Fresh synthetic recordings (2.048 s, 32 kHz); pitch = the spectral peak (parabolic interpolation) of energy-gated
frames; linear probe = ridge regression latent frame -> log2 pitch, fitted on 20 recordings per species, R^2 on 10
others; reconstruction error = median |cents| between the original's and the reconstruction's pitch tracks
(DPM-Solver++ 12 from noise as the demo decodes; DDIM 20 from the real audio noised to t0). BENCHMARKS.md,
"The saturated bottleneck", holds the figures it printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from main.data.synthetic.songs import SPECIES, synthesize_recording
from main.diffusion import add_noise, sample
from main.inference.decoding import decode_latent, diffae_data_scale
from main.models import load_model
from main.nets.bottleneck import latent_saturation, pre_bottleneck

SAMPLE_RATE = 32000
FM_SPECIES = {"Synthia fluvialis": 3, "Descendra lugubris": 4, "Modulata vibrans": 5, "Ascendor rapidus": 6}


def recordings(species: int, first_seed: int, count: int) -> torch.Tensor:
    """`count` fresh recordings of one species [count, 2, samples]."""
    return torch.from_numpy(np.stack([synthesize_recording(species, np.random.default_rng(first_seed + k), 2.048,
                                                           SAMPLE_RATE, 2).T for k in range(count)]).astype(np.float32))


def pitch_track(mono: np.ndarray, hop: int, n_fft: int, frames: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Peak frequency (Hz) per frame and whether the frame holds sound (peak > 25% of the loudest frame's)."""
    padded = np.pad(mono, (n_fft // 2, n_fft // 2))
    frames = frames or (len(mono) // hop)
    window = np.hanning(n_fft)
    spectrum = np.abs(np.fft.rfft(np.stack([padded[i * hop:i * hop + n_fft] * window for i in range(frames)]), axis=1))
    k = np.clip(spectrum.argmax(1), 1, n_fft // 2 - 1)
    left, mid, right = (np.log(spectrum[np.arange(frames), k + d] + 1e-9) for d in (-1, 0, 1))
    frequency = (k + 0.5 * (left - right) / (left - 2 * mid + right + 1e-12)) * SAMPLE_RATE / n_fft
    energy = spectrum.max(1)
    return frequency, energy > 0.25 * energy.max()


def probe_r2(features: list[np.ndarray], pitches: list[np.ndarray], train: int = 20) -> float:
    """R^2 of a ridge regression features -> log2 pitch, fitted on the first `train` recordings."""
    def design(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x, np.ones((len(x), 1))], 1)
    x_train, y_train = np.concatenate(features[:train]), np.concatenate(pitches[:train])
    x_test, y_test = np.concatenate(features[train:]), np.concatenate(pitches[train:])
    a = design(x_train)
    weights = np.linalg.solve(a.T @ a + 1e-3 * np.eye(a.shape[1]), a.T @ y_train)
    return float(1 - np.mean((design(x_test) @ weights - y_test) ** 2) / np.var(y_test))


def cents_error(originals: np.ndarray, decoded: np.ndarray) -> float:
    """Median |cents| between the pitch tracks of originals and decoded clips (frames with sound in both)."""
    errors = []
    for a, b in zip(originals, decoded):
        fa, on_a = pitch_track(a.mean(0), 256, 1024)
        fb, on_b = pitch_track(b.mean(0), 256, 1024)
        both = on_a & on_b
        errors.append(np.abs(1200 * np.log2(fb[both] / fa[both])))
    return float(np.median(np.concatenate(errors)))


@torch.no_grad()
def decode_from_noised(diffae, audio: torch.Tensor, t0: float, steps: int = 20) -> np.ndarray:
    """DDIM from the real audio noised to level t0 (t0 = 1: pure noise)."""
    scale = diffae_data_scale(diffae)
    channels = [None] * diffae.inject_depth + [diffae.encode(audio)]
    start = add_noise(audio * scale, t0, torch.Generator().manual_seed(0))
    x = sample(lambda x, s: diffae.net(x, s, channels=channels), start, steps, "ddim", sigma_start=t0)
    return (x / scale).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diffae", default="pretrained/diffae_demo.safetensors")
    parser.add_argument("--per-species", type=int, default=4, help="recordings per species to reconstruct")
    args = parser.parse_args()
    torch.manual_seed(0)
    diffae, _ = load_model(args.diffae, "diffae")
    diffae = diffae.float().eval()

    print("species               probe R^2 before / after tanh   saturation")
    for name, species in FM_SPECIES.items():
        audio = recordings(species, 5000, 30)
        with torch.no_grad():
            before = pre_bottleneck(diffae, audio)
            after = diffae.encode(audio)
        features_before, features_after, pitches = [], [], []
        for i in range(len(audio)):
            frequency, on = pitch_track(audio[i].numpy().mean(0), int(diffae.latent_factor), 512, after.shape[2])
            features_before.append(before[i].T.numpy()[on])
            features_after.append(after[i].T.numpy()[on])
            pitches.append(np.log2(frequency[on]))
        print(f"{name:22s} {probe_r2(features_before, pitches):6.2f} / {probe_r2(features_after, pitches):5.2f}"
              f"                   {latent_saturation(diffae, after):.3f}")

    print("\nreconstruction pitch error, median |cents| (DPM-Solver++ 12 from noise)")
    errors = []
    for species, spec in enumerate(SPECIES):
        audio = recordings(species, 7000 + 10 * species, args.per_species)
        with torch.no_grad():
            decoded = decode_latent(diffae, diffae.encode(audio), 12, "dpmpp-2m",
                                    generator=torch.Generator().manual_seed(0)).numpy()
        errors.append(cents_error(audio.numpy(), decoded))
        print(f"{spec.sci_name:22s} {spec.contour:9s} {errors[-1]:5.0f}")
    print(f"mean over species {np.mean(errors):.0f}")

    print("\nDDIM 20 from the real audio noised to t0, median |cents|: " + " ".join(FM_SPECIES))
    for t0 in (1.0, 0.8, 0.6):
        row = [cents_error(a.numpy(), decode_from_noised(diffae, a, t0))
               for a in (recordings(s, 7000 + 10 * s, 3) for s in FM_SPECIES.values())]
        print(f"t0 = {t0}: " + " ".join(f"{e:.0f}" for e in row))


if __name__ == "__main__":
    main()
