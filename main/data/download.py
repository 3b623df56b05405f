"""Command line: download Xeno-canto recordings and their metadata pages (resumable).

Examples::

    export XENO_CANTO_API_KEY=...
    python -m main.data.download --species "Turdus merula" --species "Erithacus rubecula" --quality A B \\
        --out data/xc
    python -m main.data.download --country Portugal --query "grp:birds type:song" --max-recordings 500 --out data/pt
    python -m main.data.prepare --audio-dir data/xc/audio --metadata data/xc/metadata/page_*.json

Run the same command again to resume: verified files are skipped, failed ones are tried again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .cli import setup_logging, usage_error
from .sources.xenocanto import API_KEY_ENV, DEFAULT_BASE_URL, XenoCantoError, download_recordings


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m main.data.download`."""
    parser = argparse.ArgumentParser(
        prog="python -m main.data.download",
        description="Download Xeno-canto recordings (API v3) and their metadata pages into OUT/audio and "
                    "OUT/metadata. Resumable: verified files are skipped, failed ones retried.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--species", action="append", default=[], metavar="NAME",
                        help='scientific name, e.g. "Turdus merula" (repeatable: one query per species)')
    parser.add_argument("--country", help="country (cnt: tag), e.g. Portugal")
    parser.add_argument("--quality", nargs="+", default=[], metavar="Q",
                        help="quality ratings to fetch, e.g. A B (one query per rating)")
    parser.add_argument("--query", help='extra raw search tags, e.g. "grp:birds type:song"')
    parser.add_argument("--max-recordings", type=int, help="stop after this many records")
    parser.add_argument("--api-key", help=f"Xeno-canto API key (default: ${API_KEY_ENV})")
    parser.add_argument("--base-url", default=DEFAULT_BASE_URL, help=f"API endpoint (default {DEFAULT_BASE_URL})")
    parser.add_argument("--rate-limit", type=float, default=1.0,
                        help="requests per second, all requests together (default 1; 0 = no limit)")
    parser.add_argument("--retries", type=int, default=3, help="retries on 429/5xx/network errors (default 3)")
    parser.add_argument("--backoff", type=float, default=2.0,
                        help="first retry delay in seconds, doubled each retry (default 2)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    parser.add_argument("--per-page", type=int, help="records per API page (API default when not given)")
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel file downloads, still within --rate-limit (default 1)")
    parser.add_argument("--no-verify-audio", action="store_true",
                        help="skip decoding each downloaded file (size checks only)")
    parser.add_argument("--verbose", action="store_true", help="log retries")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit status (0: all files present, 1: some failed, 2: usage or API error)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        report = download_recordings(
            args.out,
            species=args.species,
            country=args.country,
            quality=args.quality,
            query=args.query,
            max_recordings=args.max_recordings,
            api_key=args.api_key,
            base_url=args.base_url,
            rate_limit=args.rate_limit,
            retries=args.retries,
            timeout=args.timeout,
            backoff=args.backoff,
            per_page=args.per_page,
            workers=args.workers,
            verify_audio=not args.no_verify_audio,
        )
    except (ValueError, XenoCantoError) as error:
        return usage_error(error)
    print(report.summary())
    return 1 if report.num_failed else 0


if __name__ == "__main__":
    sys.exit(main())
