"""Identity of the files a result was made from (a model that made clips, a data set that was encoded)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from main.files import PathLike


def model_identity(path: PathLike) -> dict[str, Any]:
    """Path, size and SHA-256 of a file (a model recorded with the clips it made, a data set it encoded)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return {"path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": file_sha256(path)}


def file_sha256(path: PathLike) -> str:
    """SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()
