"""Reconstruction quality of a trained DiffAE against decoding steps, for DDIM and DPM-Solver++(2M).

    python benchmarks/bench_decoding_quality.py --diffae exports/diffae_demo.safetensors \\
        --manifest data/synthetic/<hash>/manifest.csv --clips 16

Encodes real validation clips, decodes them with each sampler and step count (same seed), and prints the mean
log-mel distance (dB, L1) to the originals: lower is better. Decoding is seeded, so runs are comparable.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from main.data.datamodule import BirdSoundDataModule  # noqa: E402
from main.inference.decoding import decode_latent  # noqa: E402
from main.nets.weights import load_model  # noqa: E402


def log_mel(audio: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Log-mel spectrogram (dB) of the channel mean, [batch, mels, frames], floored 80 dB below each clip's peak."""
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=256, n_mels=64)
    db = 10 * torch.log10(mel(audio.mean(1)).clamp(min=1e-10))
    return torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - 80)


def main() -> None:
    """Print the quality-vs-steps table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diffae", required=True)
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--crop", type=int, default=32768)
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 25, 50, 100])
    args = parser.parse_args()
    model, config = load_model(args.diffae, "diffae")
    model.eval()
    rate = int(config.get("sample_rate", 32000))
    data = BirdSoundDataModule(manifest=args.manifest, sample_rate=rate, crop_length=args.crop,
                               batch_size=args.clips, val_batch_size=args.clips, num_workers=0)
    data.setup("validate")
    audio = next(iter(data.val_dataloader()))["audio"]
    reference = log_mel(audio, rate)
    with torch.no_grad():
        latent = model.encode(audio)
        print(f"{len(audio)} clips of {args.crop / rate:.2f} s at {rate} Hz; log-mel L1 distance (dB) to the originals")
        print("sampler     steps  distance  seconds")
        for sampler in ("ddim", "dpmpp-2m"):
            for steps in args.steps:
                start = time.perf_counter()
                recon = decode_latent(model, latent, steps, sampler, torch.Generator().manual_seed(0))
                seconds = time.perf_counter() - start
                distance = (log_mel(recon[..., : audio.shape[-1]], rate) - reference).abs().mean()
                print(f"{sampler:10s} {steps:6d}  {distance:8.2f}  {seconds:7.1f}")


if __name__ == "__main__":
    main()
