"""What the data command lines (`main.data.download`, `main.data.prepare`, `main.data.shard`) share.

Logging goes to stderr as ``LEVEL logger: message``; a usage or input error prints ``error: ...`` to
stderr and exits with status 2.
"""

from __future__ import annotations

import logging
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
