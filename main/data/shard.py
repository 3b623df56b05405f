"""Command line: write a manifest's clips as WebDataset-compatible tar shards (one set per split) + index.json.

Examples::

    python -m main.data.shard --manifest data/xc/manifest.csv --out data/xc-shards --sample-rate 32000 \\
        --channels 2 --workers 8
    python -m main.data.shard --manifest data/xc/manifest.csv --out data/xc-orig --keep-original \\
        --max-shard-bytes 1G --splits train valid

Train on them with ``datamodule.shards=data/xc-shards`` (BirdSoundDataModule(shards=...)).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .cli import parse_size, setup_logging, usage_error
from .shards import write_shards


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m main.data.shard`."""
    parser = argparse.ArgumentParser(
        prog="python -m main.data.shard",
        description="Write the clips of a manifest as tar shards (WebDataset layout: <key>.flac + <key>.json), "
                    "one set per split, with an index.json.",
    )
    parser.add_argument("--manifest", type=Path, required=True, help="manifest CSV (python -m main.data.prepare)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (index.json, <split>/shard-*.tar)")
    parser.add_argument("--splits", nargs="+", help="splits to write (default: every split in the manifest)")
    parser.add_argument("--sample-rate", type=int, help="re-encode at this rate (default: keep each file's rate)")
    parser.add_argument("--channels", type=int, help="re-encode with this many channels (default: keep)")
    parser.add_argument("--keep-original", action="store_true",
                        help="store the original file bytes instead of re-encoding to FLAC")
    parser.add_argument("--max-clips-per-shard", type=int, default=1000, help="default 1000")
    parser.add_argument("--max-shard-bytes", type=parse_size, default=256 * 2**20,
                        help="e.g. 256M, 1G or a byte count (default 256M)")
    parser.add_argument("--no-shuffle", action="store_true", help="keep manifest order (default: seeded shuffle)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (default 0)")
    parser.add_argument("--workers", type=int, default=0, help="encoding processes (0: in this process)")
    parser.add_argument("--overwrite", action="store_true", help="replace shards already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (1 when some clips were skipped, 2 on a usage error)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        report = write_shards(
            args.manifest,
            args.out,
            splits=args.splits,
            sample_rate=args.sample_rate,
            channels=args.channels,
            audio_format="original" if args.keep_original else "flac",
            max_clips_per_shard=args.max_clips_per_shard,
            max_shard_bytes=args.max_shard_bytes,
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
