"""Clips/s of the streamed (LitData) data set against the plain files, on the same generated data.

Generates synthetic bird songs as FLAC files at a source rate (default 44.1 kHz, as many Xeno-canto files),
writes them once as a LitData stream at the target rate (``python -m main.data.shard`` does the same), and
times one shuffled pass of random crops (same crop length) through the training loaders of both:
`AudioDataset` + DataLoader (decode + resample per item) and `StreamingAudioDataset` + `StreamingAudioLoader`
(int16 slice per item), with 1 and 2 workers. Prints clips/s, clips/s per worker and the ratios.

    python benchmarks/bench_dataloader.py
    python benchmarks/bench_dataloader.py --clips 256 --duration 20 --workers 1 2 4
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from main.data.dataset import AudioDataset, collate_audio  # noqa: E402
from main.data.samplers import EpochShuffleSampler  # noqa: E402
from main.data.streaming import StreamingAudioDataset, StreamingAudioLoader, write_streaming_dataset  # noqa: E402
from main.data.synthetic import SPECIES, generate_synthetic_dataset  # noqa: E402


def build(root: Path, clips: int, duration: float, source_rate: int, rate: int, channels: int) -> tuple[Path, Path]:
    """(manifest of FLAC files at `source_rate`, LitData stream of the same clips at `rate`)."""
    per_species = math.ceil(clips / len(SPECIES))
    manifest = generate_synthetic_dataset(root / "files", clips_per_species=per_species, duration_s=duration,
                                          sample_rate=source_rate, split_fractions=(1.0, 0.0, 0.0))
    start = time.perf_counter()
    report = write_streaming_dataset(manifest, root / "stream", splits=["train"], sample_rate=rate,
                                     channels=channels, workers=2)
    print(f"wrote {report.clips['train']} clips ({report.bytes / 1e6:.1f} MB) as a stream in "
          f"{time.perf_counter() - start:.1f} s (2 optimize workers)")
    return manifest, root / "stream"


def timed_pass(loader: Any) -> tuple[float, int]:
    """(seconds, clips) of one pass, after the first batch (worker start-up and first chunk) is out."""
    iterator = iter(loader)
    first = next(iterator)
    start, clips = time.perf_counter(), 0
    for batch in iterator:
        clips += int(batch["audio"].shape[0])
    del first
    return time.perf_counter() - start, clips


def files_loader(manifest: Path, rate: int, crop: int, channels: int, workers: int, batch: int) -> DataLoader:
    """The plain-files training loader: AudioDataset random crops, epoch-shuffled sampler."""
    dataset = AudioDataset(manifest, "train", rate, crop, channels=channels, random_crop=True, seed=0)
    collate = functools.partial(collate_audio, channels=channels, crop_length=crop, with_text=False)
    return DataLoader(dataset, batch_size=batch, sampler=EpochShuffleSampler(len(dataset), seed=0),
                      num_workers=workers, collate_fn=collate, drop_last=True)


def stream_loader(stream: Path, rate: int, crop: int, channels: int, workers: int, batch: int) -> StreamingAudioLoader:
    """The streamed training loader: StreamingAudioDataset random crops, LitData shuffle."""
    dataset = StreamingAudioDataset(stream, "train", rate, crop, channels, random_crop=True, shuffle=True, seed=0)
    collate = functools.partial(collate_audio, channels=channels, crop_length=crop, with_text=False)
    return StreamingAudioLoader(dataset, batch_size=batch, num_workers=workers, collate_fn=collate, drop_last=True)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=120)
    parser.add_argument("--duration", type=float, default=12.0, help="seconds per clip (default 12)")
    parser.add_argument("--source-rate", type=int, default=44100)
    parser.add_argument("--sample-rate", type=int, default=32000)
    parser.add_argument("--crop", type=int, default=2**18)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.clips} clips x {args.duration:g} s, {args.source_rate} Hz FLAC files -> crops of {args.crop} "
          f"at {args.sample_rate} Hz, {args.channels} channels, batch {args.batch_size}")
    with tempfile.TemporaryDirectory(prefix="bench-dataloader-") as folder:
        manifest, stream = build(Path(folder), args.clips, args.duration, args.source_rate, args.sample_rate,
                                 args.channels)
        for workers in args.workers:
            rates = {}
            for name, make in (("files", files_loader), ("stream", stream_loader)):
                loader = make(manifest if name == "files" else stream, args.sample_rate, args.crop, args.channels,
                              workers, args.batch_size)
                seconds, clips = timed_pass(loader)
                rates[name] = clips / seconds
                print(f"  {workers} worker(s) {name:6s}: {clips} clips in {seconds:.2f} s = {rates[name]:.1f} clips/s "
                      f"({rates[name] / workers:.1f} per worker)")
            print(f"  {workers} worker(s) stream / files = {rates['stream'] / rates['files']:.2f}x")


if __name__ == "__main__":
    main()
