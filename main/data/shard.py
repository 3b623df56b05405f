"""Command line: write a manifest's clips as a LitData streaming data set (one dataset per split) + dataset.json.

Examples::

    python -m main.data.shard --manifest data/xc/manifest.csv --out data/xc/streamed --sample-rate 32000 \\
        --channels 2 --workers 8
    python -m main.data.shard --manifest data/xc/manifest.csv --out data/xc/streamed-orig --keep-original \\
        --chunk-bytes 256M --splits train valid

Train on it with ``datamodule=streamed datamodule.stream=data/xc/streamed`` (or an ``s3://bucket/prefix``
the folder was copied to).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .cli import parse_size, setup_logging, usage_error


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m main.data.shard`."""
    parser = argparse.ArgumentParser(
        prog="python -m main.data.shard",
        description="Write the clips of a manifest as a LitData streaming data set (litdata.optimize): "
                    "<out>/<split>/index.json + chunk-*.bin per split, and <out>/dataset.json (provenance).",
    )
    parser.add_argument("--manifest", type=Path, required=True, help="manifest CSV (python -m main.data.prepare)")
    parser.add_argument("--out", required=True,
                        help="output folder (local; copy it to object storage afterwards to stream from there)")
    parser.add_argument("--splits", nargs="+", help="splits to write (default: every split in the manifest)")
    parser.add_argument("--sample-rate", type=int,
                        help="resample to this rate, e.g. the model's (default: keep each file's rate)")
    parser.add_argument("--channels", type=int, help="convert to this many channels (default: keep)")
    parser.add_argument("--keep-original", action="store_true",
                        help="store the original file bytes (decoded when read) instead of int16 samples")
    parser.add_argument("--max-clips-per-chunk", dest="chunk_size", type=int,
                        help="close a chunk after this many clips (instead of --chunk-bytes)")
    parser.add_argument("--chunk-bytes", dest="chunk_bytes", type=parse_size,
                        default=64 * 2**20, help="close a chunk at this size: 64M, 1G or a byte count (default 64M)")
    parser.add_argument("--no-shuffle", action="store_true", help="keep manifest order (default: seeded shuffle)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    parser.add_argument("--workers", type=int, default=0,
                        help="litdata.optimize worker processes (0 or 1: one); the chunks depend on this number")
    parser.add_argument("--overwrite", action="store_true", help="replace a data set already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (1 when some clips were skipped, 2 on a usage error)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    from .streaming import write_streaming_dataset

    try:
        report = write_streaming_dataset(
            args.manifest,
            args.out,
            splits=args.splits,
            sample_rate=args.sample_rate,
            channels=args.channels,
            audio_format="original" if args.keep_original else "pcm16",
            chunk_size=args.chunk_size,
            chunk_bytes=args.chunk_bytes,
            shuffle=not args.no_shuffle,
            seed=args.seed,
            workers=args.workers,
            overwrite=args.overwrite,
            progress=not args.quiet,
        )
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        return usage_error(error)
    print(report.summary())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
