"""Decode + resample + crop throughput of AudioDataset for MP3 and FLAC sources.

Generates synthetic bird songs at a source rate (default 44.1 kHz, as many Xeno-canto files), writes them
as FLAC and MP3, and times `AudioDataset` random crops to 32 kHz (crop 2**18) in one process with one
torch thread (what one DataLoader worker does), or through a DataLoader with --workers N.

    python benchmarks/bench_audio_decoding.py --clips 64
    python benchmarks/bench_audio_decoding.py --clips 64 --workers 2 --duration 30
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from main.data.dataset import AudioDataset, collate_audio  # noqa: E402
from main.data.manifest import prepare_manifest, read_manifest  # noqa: E402
from main.data.samplers import EpochShuffleSampler  # noqa: E402
from main.data.synthetic import SPECIES, generate_synthetic_dataset  # noqa: E402

FORMATS = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "wav": ("WAV", "PCM_16"),
           "ogg": ("OGG", "VORBIS")}


def build_sets(root: Path, clips: int, duration: float, source_rate: int, formats: list[str]) -> dict[str, Path]:
    """Synthetic WAV masters transcoded to each format; returns a manifest per format."""
    per_species = math.ceil(clips / len(SPECIES))
    master = generate_synthetic_dataset(root / "master", clips_per_species=per_species, duration_s=duration,
                                        sample_rate=source_rate, audio_format="wav")
    rows = read_manifest(master)[:clips]
    manifests = {}
    for fmt in formats:
        container, subtype = FORMATS[fmt]
        folder = root / fmt
        folder.mkdir(parents=True, exist_ok=True)
        for row in rows:
            audio, rate = sf.read(row["path"], dtype="float32")
            sf.write(folder / (Path(row["path"]).stem + "." + fmt), audio, rate, format=container, subtype=subtype)
        start = time.perf_counter()
        report = prepare_manifest(folder, metadata=[master.parent / "metadata.json"], fractions=(1.0, 0.0, 0.0))
        elapsed = time.perf_counter() - start
        print(f"{fmt}: validated {report.ok} files (full decode) in {elapsed:.2f} s "
              f"= {report.ok / elapsed:.1f} files/s in one process")
        manifests[fmt] = report.manifest_path  # type: ignore[assignment]
    return manifests


def time_dataset(manifest: Path, sample_rate: int, crop: int, workers: int, batch_size: int) -> tuple[float, int]:
    """Clips per second per worker for one pass of random crops (after a short warm-up)."""
    dataset = AudioDataset(manifest, None, sample_rate, crop, channels=2, random_crop=True, seed=0)
    for index in range(min(2, len(dataset))):  # warm-up: resampler kernels, file cache
        dataset[index]
    start = time.perf_counter()
    if workers == 0:
        loaded = sum(dataset[(i, 1)] is not None for i in range(len(dataset)))
    else:
        loader = DataLoader(dataset, batch_size=batch_size, sampler=EpochShuffleSampler(len(dataset), seed=0),
                            num_workers=workers, collate_fn=collate_audio)
        loaded = sum(int(batch["audio"].shape[0]) for batch in loader)
    elapsed = time.perf_counter() - start
    return loaded / elapsed / max(workers, 1), loaded


def main() -> None:
    """Parse arguments, build the data and print throughput per format."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=32, help="clips per format (default 32)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per source clip (default 20)")
    parser.add_argument("--source-rate", type=int, default=44100, help="source sample rate (default 44100)")
    parser.add_argument("--sample-rate", type=int, default=32000, help="target sample rate (default 32000)")
    parser.add_argument("--crop-length", type=int, default=2**18, help="crop length in samples (default 2**18)")
    parser.add_argument("--formats", nargs="+", default=["flac", "mp3"], choices=sorted(FORMATS))
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers (0: time in this process)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out-dir", type=Path, help="keep the generated files here (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a DataLoader worker runs with one thread
    for fmt in args.formats:
        if FORMATS[fmt][0] not in sf.available_formats():
            parser.error(f"this libsndfile cannot write {fmt}")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out_dir or Path(tmp)
        manifests = build_sets(root, args.clips, args.duration, args.source_rate, args.formats)
        print(f"\nrandom crops of {args.crop_length} samples at {args.sample_rate} Hz from "
              f"{args.duration:g} s stereo {args.source_rate} Hz sources, workers={args.workers}")
        for fmt, manifest in manifests.items():
            rate, loaded = time_dataset(manifest, args.sample_rate, args.crop_length, args.workers, args.batch_size)
            print(f"{fmt:>5}: {rate:7.1f} clips/s per worker ({loaded} clips)")


if __name__ == "__main__":
    main()
