"""Noise floor, peaks and rhythm of DiffAE reconstructions under decoding schedules and step counts.

    python benchmarks/bench_decoding_fidelity.py --manifest demo/data/synthetic/<hash>/manifest.csv \\
        --diffae pretrained/diffae_demo.safetensors --variants 1:12 2:12 3:12 2:25

Each variant is `power:steps` (`main.diffusion.sigma_schedule`'s power; 1 = the library's linear schedule). Every
variant decodes the same latents of the same test recordings (`--per-species` of each species) from the same
starting noise with DPM-Solver++, before the output level (peak=None), and is measured with
`main.analysis.fidelity` against the training recordings (20 per species), on the channel mean.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from main.analysis import fidelity
from main.analysis.clips import select_rows
from main.analysis.generate import diffae_length_multiple, load_clip
from main.data.manifest import read_manifest
from main.inference.decoding import decode_latent, decoding_noise
from main.nets.weights import load_model


def main() -> None:
    """Decode the test recordings' latents with each variant and print the fidelity figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--diffae", type=Path, default=Path("pretrained/diffae_demo.safetensors"))
    parser.add_argument("--per-species", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--variants", nargs="+", default=["1:12", "2:12", "3:12"])
    args = parser.parse_args()

    diffae, config = load_model(args.diffae, "diffae")
    diffae = diffae.eval().requires_grad_(False)
    rate = int(config.get("sample_rate", 32000))
    rows = select_rows(read_manifest(args.manifest, "test"), None, args.per_species, 0)
    reference_rows = select_rows(read_manifest(args.manifest, "train"), None, 20, 0)
    reference = [fidelity.file_features(r["path"]) for r in reference_rows]
    reference_species = [r["sci_name"] for r in reference_rows]
    species = [r["sci_name"] for r in rows]
    clips = torch.stack([torch.from_numpy(load_clip(r["path"], rate, args.seconds, diffae.in_channels)) for r in rows])
    multiple = diffae_length_multiple(diffae)
    length = -(-clips.shape[-1] // multiple) * multiple
    with torch.no_grad():
        latent = diffae.encode(torch.nn.functional.pad(clips, (0, length - clips.shape[-1])))
    noise = torch.cat([decoding_noise(diffae, latent[i:i + 1], torch.Generator().manual_seed(i))
                       for i in range(len(rows))])

    def report(name: str, features: list, seconds: float = 0.0) -> None:
        result = fidelity.fidelity(features, species, reference, reference_species)
        clip = result["clipping"]
        print(f"{name:>14}  noise floor {result['noise_floor_db_vs_real']:+5.1f} dB  peaks median "
              f"{clip['peak_median']:.2f} max {clip['peak_max']:.2f}  rhythm {result['rhythm_species_within_20pct']}"
              f"/{result['rhythm_n_species']} (log2 {result['rhythm_log2_distance']:.2f})  {seconds:.0f} s", flush=True)

    print(f"{len(rows)} test recordings of {len(set(species))} species; reference: {len(reference)} training "
          f"recordings; {args.diffae}")
    report("originals", [fidelity.file_features(r["path"]) for r in rows])
    for variant in args.variants:
        power, steps = variant.split(":")
        start = time.monotonic()
        with torch.no_grad():
            audio = decode_latent(diffae, latent, int(steps), "dpmpp-2m", noise=noise, sigma_power=float(power),
                                  peak=None)[..., :clips.shape[-1]]
        features = []
        for mono in audio.mean(1).double().numpy():
            f = fidelity.audio_features(mono, rate)
            f.clipped_samples = int((np.abs(mono) >= fidelity.CLIP_LEVEL).sum())
            features.append(f)
        report(f"power {power}, {steps}", features, time.monotonic() - start)


if __name__ == "__main__":
    main()
