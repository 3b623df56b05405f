"""The one audio path: file checks, reads (soundfile, with a torchaudio fallback for containers libsndfile cannot
open), resampling and channel conversion.

Kept free of torch at import time so validation workers start fast (the tensor helpers import it when called).

Reasons a file is rejected (`check_audio`), in the order they are tested:

* ``missing_file``: the path does not exist (or is not a regular file).
* ``empty``: zero bytes, or a valid header with no audio frames.
* ``unsupported``: not a recognised audio container (e.g. a text file named ``.wav``), or a container that
  neither libsndfile nor torchaudio (with ``torchcodec``) can decode here (e.g. ``.m4a`` without torchcodec).
* ``corrupt``: a recognised container (by its magic bytes) that fails to open or decode, or decodes to
  less than 90% of the frames its header announces (a truncated download).
* ``too_long``: longer than ``max_seconds`` (by header, before decoding, and again after decoding).
* ``non_finite``: NaN or infinite samples (float WAV/FLAC).
* ``silent``: peak below ``silence_dbfs`` (default -90 dBFS, about one 16-bit LSB).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np
import soundfile as sf

from main.files import PathLike

if TYPE_CHECKING:
    from torch import Tensor

REASONS: tuple[str, ...] = (
    "missing_file",
    "empty",
    "unsupported",
    "corrupt",
    "too_long",
    "non_finite",
    "silent",
)
AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".wave", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aif", ".aiff", ".aifc", ".au", ".caf",
     ".w64", ".rf64", ".m4a", ".mp4", ".aac", ".webm", ".wv"}
)
_MIN_DECODED_RATIO = 0.9
_BLOCK_FRAMES = 1 << 17


def _libsndfile_containers() -> frozenset[str]:
    """Containers (as named by `sniff_container`) that this libsndfile build can read."""
    names = {"wav", "flac", "ogg", "aiff", "au", "caf", "w64"}
    if "MP3" in sf.available_formats():
        names.add("mp3")
    return frozenset(names)


LIBSNDFILE_CONTAINERS = _libsndfile_containers()


def sniff_container(path: PathLike) -> Optional[str]:
    """The audio container named by the file's magic bytes ('wav', 'flac', 'mp3', ...), or None."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if len(head) < 4:
        return None
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"riff":
        return "w64"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3":
        return "mp3"
    if head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:
        return "aac"  # ADTS
    if head[0] == 0xFF and (head[1] & 0xE0) == 0xE0:
        return "mp3"  # MPEG audio frame sync
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] in (b".snd", b"dns."):
        return "au"
    if head[:4] == b"caff":
        return "caf"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1aE\xdf\xa3":
        return "webm"
    if head[:4] == b"wvpk":
        return "wavpack"
    return None


@dataclass(frozen=True)
class AudioCheck:
    """Result of `check_audio`: `reason` is None for a good file, else one of REASONS."""

    path: str
    reason: Optional[str]
    detail: str = ""
    duration: float = 0.0
    sample_rate: int = 0
    channels: int = 0
    frames: int = 0
    format: str = ""

    @property
    def ok(self) -> bool:
        """Whether the file passed every check."""
        return self.reason is None


class AudioReadError(RuntimeError):
    """A file could not be read as audio."""


def _torchaudio_decode(path: PathLike) -> tuple[np.ndarray, int]:
    """Decode a whole file with torchaudio (needs torchcodec); returns ([frames, channels] float32, rate)."""
    try:
        import torchaudio
    except ImportError as error:  # torchaudio is a project requirement, but keep the message clear
        raise AudioReadError(f"torchaudio is not installed ({error})") from error
    try:
        waveform, rate = torchaudio.load(str(path))
    except (ImportError, ModuleNotFoundError) as error:
        raise AudioReadError(f"torchaudio needs the 'torchcodec' package to decode this file ({error})") from error
    except Exception as error:  # torchaudio/torchcodec raise several unrelated types for undecodable input
        raise AudioReadError(f"torchaudio could not decode the file: {error}") from error
    return waveform.numpy().T.astype(np.float32, copy=False), int(rate)


def check_audio(path: PathLike, max_seconds: float = 300.0, silence_dbfs: float = -90.0) -> AudioCheck:
    """Validate one file: header, full decode, finiteness, silence and length (see module docstring)."""
    path_str = str(path)
    if not os.path.isfile(path_str):
        return AudioCheck(path_str, "missing_file", "file not found")
    if os.path.getsize(path_str) == 0:
        return AudioCheck(path_str, "empty", "zero bytes")
    try:
        container = sniff_container(path_str)
    except OSError as error:
        return AudioCheck(path_str, "corrupt", f"cannot read the file: {error}")
    silence = 10.0 ** (silence_dbfs / 20.0)
    try:
        handle = sf.SoundFile(path_str)
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        if container in LIBSNDFILE_CONTAINERS:
            return AudioCheck(path_str, "corrupt", f"{container} file does not open: {error}")
        if container is None:
            return AudioCheck(path_str, "unsupported", f"not a recognised audio format: {error}")
        try:
            data, rate = _torchaudio_decode(path_str)
        except AudioReadError as fallback_error:
            return AudioCheck(path_str, "unsupported", f"{container}: {fallback_error}")
        return _judge_decoded(path_str, data, rate, container, max_seconds, silence)

    with handle:
        rate, channels, header_frames = int(handle.samplerate), int(handle.channels), int(handle.frames)
        fmt = str(handle.format).lower()
        if rate <= 0 or channels <= 0:
            return AudioCheck(path_str, "corrupt", f"invalid header: {rate} Hz, {channels} channels", format=fmt)
        if header_frames == 0:
            return AudioCheck(path_str, "empty", "no audio frames", 0.0, rate, channels, 0, fmt)
        if header_frames / rate > max_seconds:
            return AudioCheck(path_str, "too_long", f"{header_frames / rate:.1f} s > {max_seconds:g} s",
                              header_frames / rate, rate, channels, header_frames, fmt)
        decoded, peak, finite = 0, 0.0, True
        try:
            while True:
                block = handle.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                decoded += block.shape[0]
                mask = np.isfinite(block)
                if not mask.all():
                    finite = False
                    block = np.where(mask, block, 0.0)
                peak = max(peak, float(np.abs(block).max()))
                if decoded / rate > max_seconds:
                    break
        except (sf.LibsndfileError, RuntimeError) as error:
            return AudioCheck(path_str, "corrupt", f"decode failed after {decoded} frames: {error}",
                              decoded / rate, rate, channels, decoded, fmt)
    return _judge(path_str, decoded, header_frames, rate, channels, fmt, peak, finite, max_seconds, silence)


def _judge_decoded(path: str, data: np.ndarray, rate: int, fmt: str, max_seconds: float, silence: float) -> AudioCheck:
    """Judge a fully decoded [frames, channels] array."""
    if rate <= 0:
        return AudioCheck(path, "corrupt", f"invalid sample rate {rate}", format=fmt)
    mask = np.isfinite(data)
    finite = bool(mask.all())
    peak = float(np.abs(np.where(mask, data, 0.0)).max()) if data.size else 0.0
    channels = int(data.shape[1]) if data.ndim == 2 else 1
    return _judge(path, int(data.shape[0]), int(data.shape[0]), rate, channels, fmt, peak, finite, max_seconds, silence)


def _judge(
    path: str, decoded: int, header_frames: int, rate: int, channels: int, fmt: str,
    peak: float, finite: bool, max_seconds: float, silence: float,
) -> AudioCheck:
    """The verdict once a file has been decoded."""
    duration = decoded / rate
    args = (duration, rate, channels, decoded, fmt)
    if decoded == 0:
        return AudioCheck(path, "empty", "decoded no audio frames", *args)
    if decoded < _MIN_DECODED_RATIO * header_frames:
        return AudioCheck(path, "corrupt", f"truncated: decoded {decoded} of {header_frames} frames", *args)
    if duration > max_seconds:
        return AudioCheck(path, "too_long", f"{duration:.1f} s > {max_seconds:g} s", *args)
    if not finite:
        return AudioCheck(path, "non_finite", "NaN or infinite samples", *args)
    if peak <= silence:
        db = 20 * math.log10(peak) if peak > 0 else float("-inf")
        return AudioCheck(path, "silent", f"peak {db:.1f} dBFS", *args)
    return AudioCheck(path, None, "", *args)


def read_audio(path: PathLike, start: int = 0, frames: int = -1) -> tuple[np.ndarray, int]:
    """Read `frames` frames (all when -1) from `start` as a float32 [frames, channels] array and its rate."""
    path_str = str(path)
    try:
        with sf.SoundFile(path_str) as handle:
            rate = int(handle.samplerate)
            if start > 0:
                if start >= handle.frames > 0:
                    return np.zeros((0, handle.channels), np.float32), rate
                handle.seek(start)
            data = handle.read(frames, dtype="float32", always_2d=True)
        return data, rate
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        if not os.path.isfile(path_str):
            raise AudioReadError(f"{path_str}: file not found") from error
        if sniff_container(path_str) in LIBSNDFILE_CONTAINERS:
            raise AudioReadError(f"{path_str}: {error}") from error
        data, rate = _torchaudio_decode(path_str)
        stop = data.shape[0] if frames < 0 else start + frames
        return data[start:stop], rate


def is_audio_path(path: Path) -> bool:
    """Whether `path` has an audio file extension."""
    return path.suffix.lower() in AUDIO_EXTENSIONS


def to_channels(audio: Tensor, channels: int) -> Tensor:
    """[C, L] -> [channels, L]: mono is duplicated, extra channels are dropped (the first ones kept), 1 = downmix."""
    have = audio.shape[0]
    if have == channels:
        return audio
    if channels == 1:
        return audio.mean(dim=0, keepdim=True)
    if have == 1:
        return audio.expand(channels, -1).clone()
    if have > channels:
        return audio[:channels]
    return audio.repeat(math.ceil(channels / have), 1)[:channels]


def recording_tensor(data: np.ndarray, rate: int, sample_rate: int, channels: int) -> Tensor:
    """Decoded audio [frames, channels] at `rate` as float32 [channels, samples] at `sample_rate`."""
    import torch
    import torchaudio

    audio = torch.from_numpy(np.ascontiguousarray(data.T))
    if rate != sample_rate:
        audio = torchaudio.functional.resample(audio, rate, sample_rate)
    return to_channels(audio, channels)


def load_recording(path: PathLike, sample_rate: int, channels: int) -> Tensor:
    """A whole recording as float32 [channels, samples] at `sample_rate`."""
    return recording_tensor(*read_audio(path), sample_rate, channels)
