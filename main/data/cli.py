"""What the data command lines (`main.data.download`, `main.data.prepare`, `main.data.shard`) share.

Logging goes to stderr as ``LEVEL logger: message``; a usage or input error prints ``error: ...`` to
stderr and exits with status 2. `parse_size` reads byte sizes such as ``256M``.
"""

from __future__ import annotations

import logging
import re
import sys

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
USAGE_ERROR = 2  # exit status of a usage or input error


def setup_logging(verbose: bool = False) -> None:
    """Log warnings (and info messages when `verbose`) in the data CLIs' format."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=LOG_FORMAT)


def usage_error(error: BaseException) -> int:
    """Print ``error: <error>`` to stderr; returns the exit status of a usage or input error."""
    print(f"error: {error}", file=sys.stderr)
    return USAGE_ERROR


def parse_size(text: str) -> int:
    """Bytes from '268435456', '256M', '1.5G', '512KiB' (K/M/G/T are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 268435456, 256M, 1G)")
    value, unit = float(match.group(1)), match.group(2)
    return int(value * 1024 ** ("kmgt".index(unit) + 1 if unit else 0))
