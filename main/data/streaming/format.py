"""The streamed data set's layout: one LitData dataset per split plus dataset.json, and decoding its items.

Layout written by `main.data.streaming.writer.write_streaming_dataset` (``python -m main.data.shard``)::

    OUT/dataset.json              provenance: manifest (path, size, SHA-256), options, clips per split, failures
    OUT/train/index.json          LitData's index of the split's chunks (written by `litdata.optimize`)
    OUT/train/chunk-0-0.bin       chunks of samples
    OUT/valid/...

A sample is ``{"key", "audio", "sample_rate", "label", "meta"}``: ``audio`` is int16 PCM [frames, channels]
(``pcm16``, already converted and resampled) or the original file's bytes with ``ext`` (``original``);
``meta`` is the manifest row (without its path) plus the key and the stored audio's info, as JSON.
`OUT` may also be an object-store URL (``s3://bucket/prefix``) the folder was copied to.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from main.files import PathLike

from ..audio import AUDIO_EXTENSIONS, read_audio

DATASET_FILE = "dataset.json"
LITDATA_INDEX = "index.json"
DATASET_FORMAT = "bird-diffusion-litdata"
DATASET_VERSION = 1
AUDIO_FORMATS = ("pcm16", "original")
AUDIO_SUFFIXES = tuple(sorted(ext.lstrip(".") for ext in AUDIO_EXTENSIONS))
PCM_SCALE = 32768.0  # int16 <-> float, as libsndfile reads 16-bit FLAC
URL_SCHEMES = ("s3://", "gs://", "azure://", "hf://")


def is_url(location: str) -> bool:
    """Whether `location` is an object-store URL rather than a local folder."""
    return str(location).startswith(URL_SCHEMES)


def split_location(root: PathLike, split: str) -> str:
    """The LitData dataset of one split: ``<root>/<split>`` (a folder or a URL)."""
    text = str(root)
    if is_url(text):
        return f"{text.rstrip('/')}/{split}"
    return str(Path(text).expanduser() / split)


def check_split(root: PathLike, split: str) -> None:
    """Raise FileNotFoundError naming the missing index when a local split has not been written."""
    if is_url(str(root)):
        return  # LitData reports a missing remote index itself
    index = Path(split_location(root, split)) / LITDATA_INDEX
    if not index.is_file():
        present = sorted(p.parent.name for p in Path(root).expanduser().glob(f"*/{LITDATA_INDEX}"))
        raise FileNotFoundError(f"{index} does not exist: write the split with `python -m main.data.shard` "
                                f"(splits present in {root}: {present})")


def read_dataset_info(root: PathLike) -> dict[str, Any]:
    """The dataset.json of a local streamed data set, validated."""
    path = Path(root).expanduser() / DATASET_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: write the data set with `python -m main.data.shard` first")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(info, dict) or info.get("format") != DATASET_FORMAT:
        raise ValueError(f"{path} was not written by main.data.streaming (format {DATASET_FORMAT!r})")
    if int(info.get("version", 0)) > DATASET_VERSION:
        raise ValueError(f"{path}: version {info.get('version')} is newer than this code ({DATASET_VERSION})")
    return info


def decode_item(item: dict[str, Any]) -> tuple[np.ndarray, int]:
    """The whole audio of one stored sample as float32 [frames, channels] and its rate."""
    audio = item["audio"]
    if isinstance(audio, np.ndarray):
        return audio.astype(np.float32) / PCM_SCALE, int(item["sample_rate"])
    try:
        data, rate = sf.read(io.BytesIO(audio), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        data, rate = decode_with_fallback(audio, str(item["ext"]))
    return data, int(rate)


def decode_with_fallback(payload: bytes, ext: str) -> tuple[np.ndarray, int]:
    """Decode bytes libsndfile cannot open (e.g. m4a) through a temporary file and torchaudio."""
    with tempfile.TemporaryDirectory(prefix="stream-clip-") as folder:
        path = Path(folder) / f"clip.{ext}"
        path.write_bytes(payload)
        return read_audio(path)
