"""Old names that keep working after a rename to one name per concept (`sampling_steps`, `decoding_steps`,
`embedding_scale`, as in `CombinedSampler.sample`): keyword arguments with a DeprecationWarning, command-line
flags as hidden aliases."""

from __future__ import annotations

import argparse
import functools
import warnings
from typing import Any, Callable, TypeVar

Function = TypeVar("Function", bound=Callable[..., Any])


def renamed_keywords(**renames: str) -> Callable[[Function], Function]:
    """Decorator: each keyword `old=new` is still accepted under its old name, with a DeprecationWarning."""

    def decorate(function: Function) -> Function:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(f"{function.__name__}() got both {old!r} (its old name) and {new!r}")
                warnings.warn(f"{function.__name__}(): keyword {old!r} is now {new!r}", DeprecationWarning,
                              stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def add_flag_alias(parser: argparse.ArgumentParser, old_flag: str, dest: str, **kwargs: Any) -> None:
    """Accept `old_flag` (hidden from --help) for the argument stored in `dest`, e.g. `--steps` for
    `--sampling-steps`; `kwargs` as for that argument (type, nargs)."""
    parser.add_argument(old_flag, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)
