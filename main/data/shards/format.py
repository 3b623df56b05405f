"""The tar-shard format: folder layout, index.json, and reading a shard's samples.

Layout written by `main.data.shards.writer.write_shards` (``python -m main.data.shard``)::

    OUT/index.json                 shards per split with their clip counts and sizes, sample rate, channels
    OUT/train/shard-000000.tar     <key>.flac (or the original file's bytes, <key>.<ext>) + <key>.json
    OUT/valid/shard-000000.tar     ...

Each tar member is named ``<key>.<extension>`` as WebDataset expects (``webdataset.WebDataset(url)``
yields ``{"__key__": key, "flac": bytes, "json": bytes}``); keys hold no dots. The JSON is the manifest
row (label, sci_name, split, ...) plus ``key`` and ``audio`` (sample rate, channels, frames and format
of the stored audio). Written with the standard `tarfile` module (USTAR, mtime 0, fixed member order),
so the same manifest and options give byte-identical shards.
"""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import soundfile as sf

from main.files import PathLike

from ..audio import AUDIO_EXTENSIONS, AudioReadError, read_audio

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
INDEX_FORMAT = "bird-diffusion-shards"
INDEX_VERSION = 1
SHARD_NAME = "shard-{:06d}.tar"
AUDIO_FORMATS = ("flac", "original")
AUDIO_SUFFIXES = tuple(sorted(ext.lstrip(".") for ext in AUDIO_EXTENSIONS))  # extensions of audio members
_MEMBER_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # WebDataset's key / extension split


def read_index(shards: PathLike) -> dict[str, Any]:
    """The index.json of a shard folder (or the file itself), validated."""
    path = Path(shards)
    if path.is_dir():
        path = path / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: write shards with `python -m main.data.shard` first")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT or not isinstance(index.get("splits"), dict):
        raise ValueError(f"{path} is not a shard index written by main.data.shards")
    if int(index.get("version", 0)) > INDEX_VERSION:
        raise ValueError(f"{path}: index version {index.get('version')} is newer than this code ({INDEX_VERSION})")
    return index


def split_shards(shards: PathLike, split: str) -> list[tuple[Path, int]]:
    """(tar path, clip count) of each shard of one split of a shard folder (or its index.json), in index order."""
    root = Path(shards)
    index = read_index(root)
    root = root if root.is_dir() else root.parent
    if split not in index["splits"]:
        raise ValueError(f"split {split!r} is not in {root / INDEX_FILE} (splits: {sorted(index['splits'])})")
    return [(root / entry["path"], int(entry["clips"])) for entry in index["splits"][split]["shards"]]


def audio_member(members: dict[str, bytes]) -> str:
    """The extension of a shard sample's audio member."""
    ext = next((e for e in members if e in AUDIO_SUFFIXES), None)
    if ext is None:
        raise AudioReadError(f"no audio member (members: {sorted(members)})")
    return ext


def decode_audio_member(members: dict[str, bytes]) -> tuple[np.ndarray, int]:
    """The whole audio of one shard sample as float32 [frames, channels] and its rate."""
    ext = audio_member(members)
    try:
        data, rate = sf.read(io.BytesIO(members[ext]), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        data, rate = decode_with_fallback(members[ext], ext)
    return data, int(rate)


def decode_with_fallback(payload: bytes, ext: str) -> tuple[np.ndarray, int]:
    """Decode bytes libsndfile cannot open (e.g. m4a) through a temporary file and torchaudio."""
    with tempfile.TemporaryDirectory(prefix="shard-clip-") as folder:
        path = Path(folder) / f"clip.{ext}"
        path.write_bytes(payload)
        return read_audio(path)


def iter_tar_samples(path: PathLike) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) per sample of a tar, read as a stream; members of a key must be adjacent."""
    current: Optional[str] = None
    members: dict[str, bytes] = {}
    with tarfile.open(path, "r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            match = _MEMBER_RE.match(member.name)
            if match is None:
                log.warning("%s: member %r has no key.extension name; ignored", path, member.name)
                continue
            key, ext = match.group(1), match.group(2).lower()
            handle = tar.extractfile(member)
            if handle is None:
                continue
            data = handle.read()
            if key != current:
                if current is not None:
                    yield Path(current).name, members
                current, members = key, {}
            members[ext] = data
    if current is not None:
        yield Path(current).name, members
