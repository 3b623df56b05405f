"""Writing a manifest's clips as a LitData streaming data set (`litdata.optimize`), one dataset per split.

Each split's rows are (optionally) shuffled with a seed, given unique keys and handed to `litdata.optimize`
in that order (``keep_data_ordered=True``, ``reorder_files=False``): worker w of `workers` writes the w-th
contiguous slice as ``chunk-<w>-<n>.bin``, so the same manifest and options give byte-identical chunks
(LitData's index.json differs only in its ``updated_at`` time). Files that fail to read are skipped; the
optimize workers record them in side files that become the report and dataset.json's ``failed``.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import os
import re
import shutil
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import soundfile as sf
import torch
import torchaudio

from main.files import PathLike, write_text_atomic
from main.provenance import model_identity

from ..audio import AudioReadError, read_audio, to_channels
from ..manifest import read_manifest
from .format import (
    AUDIO_FORMATS,
    AUDIO_SUFFIXES,
    DATASET_FILE,
    DATASET_FORMAT,
    DATASET_VERSION,
    LITDATA_INDEX,
    PCM_SCALE,
    is_url,
)

log = logging.getLogger(__name__)

_SPLIT_RE = re.compile(r"[A-Za-z0-9_-]+")
_CHUNK_RE = re.compile(r"chunk-\d+-\d+\.bin")
_LOG_DIR = ".write-log"
Job = tuple[str, str, dict[str, Any]]  # key, path, manifest row


@dataclass
class StreamReport:
    """Outcome of `write_streaming_dataset`: clips and chunks per split, failures by reason, sizes."""

    out_dir: Optional[Path] = None
    info_path: Optional[Path] = None
    clips: dict[str, int] = field(default_factory=dict)
    chunks: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    failed: Counter = field(default_factory=Counter)
    failed_files: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """A short human-readable report."""
        lines = [f"{split}: {self.clips[split]} clips in {self.chunks[split]} chunk(s)" for split in self.clips]
        lines.append(f"total {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s")
        if self.failed:
            lines.append("skipped by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(self.failed.items())))
            lines.extend(f"  {reason}\t{path}\t{detail}" for path, reason, detail in self.failed_files[:20])
            if len(self.failed_files) > 20:
                lines.append(f"  ... and {len(self.failed_files) - 20} more")
        if self.info_path:
            lines.append(f"provenance: {self.info_path}")
        return "\n".join(lines)


def sample_key(row: dict[str, Any], position: int) -> str:
    """A key for a manifest row: XC<id> (or the id, or clip<position>) with only [A-Za-z0-9_-]."""
    xc_id = str(row.get("id") or "").strip()
    key = f"XC{xc_id}" if xc_id.isdigit() else xc_id or f"clip{position:09d}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)[:80]


def encode_pcm16(path: str, sample_rate: Optional[int], channels: Optional[int]) -> tuple[np.ndarray, int]:
    """Decode a file, convert channels, resample; returns (int16 [frames, channels], rate)."""
    data, rate = read_audio(path)
    if data.shape[0] == 0:
        raise AudioReadError(f"{path}: no audio frames")
    if not np.isfinite(data).all():
        raise AudioReadError(f"{path}: non-finite samples")
    audio = torch.from_numpy(np.ascontiguousarray(data.T))
    if channels:
        audio = to_channels(audio, channels)
    if sample_rate and rate != sample_rate:
        audio = torchaudio.functional.resample(audio, rate, sample_rate)
        rate = sample_rate
    pcm = np.clip(np.round(audio.numpy().T * PCM_SCALE), -PCM_SCALE, PCM_SCALE - 1).astype(np.int16)
    return np.ascontiguousarray(pcm), int(rate)


class ClipEncoder:
    """The `optimize` function: a manifest job -> one sample dict, or None (recorded in `log_dir`) on failure."""

    def __init__(self, sample_rate: Optional[int], channels: Optional[int], audio_format: str, log_dir: str) -> None:
        self.sample_rate, self.channels, self.audio_format, self.log_dir = sample_rate, channels, audio_format, log_dir

    def __call__(self, job: Job) -> Optional[dict[str, Any]]:
        """Encode one clip; failures and successes go to this process's line of the write log."""
        key, path, row = job
        try:
            sample, seconds = self._encode(key, path, row)
        except FileNotFoundError as error:
            return self._failed(path, "missing_file", str(error))
        except (AudioReadError, sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
            return self._failed(path, "unreadable", str(error))
        self._log({"ok": key, "seconds": seconds})
        return sample

    def _encode(self, key: str, path: str, row: dict[str, Any]) -> tuple[Optional[dict[str, Any]], float]:
        """The sample of one clip and its duration in seconds."""
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path} does not exist")
        extra: dict[str, Any] = {}
        if self.audio_format == "original":
            ext = Path(path).suffix.lower().lstrip(".")
            if ext not in AUDIO_SUFFIXES:
                raise ValueError(f"extension {ext!r} is not an audio extension")
            audio: Any = Path(path).read_bytes()
            if not audio:
                raise AudioReadError("zero bytes")
            rate = int(row.get("sample_rate") or 0)
            info = {"sample_rate": row.get("sample_rate"), "channels": row.get("channels"),
                    "frames": row.get("frames"), "format": ext}
            extra["ext"] = ext
            seconds = float(row.get("frames") or 0) / rate if rate else 0.0
        else:
            audio, rate = encode_pcm16(path, self.sample_rate, self.channels)
            info = {"sample_rate": rate, "channels": int(audio.shape[1]), "frames": int(audio.shape[0]),
                    "format": "pcm16"}
            seconds = audio.shape[0] / rate
        meta = {k: v for k, v in row.items() if k != "path"}
        meta.update(key=key, audio=info)
        sample = {"key": key, "audio": audio, "sample_rate": int(rate), "label": str(row.get("label", "")),
                  "meta": json.dumps(meta, ensure_ascii=False, sort_keys=True), **extra}
        return sample, round(seconds, 3)

    def _failed(self, path: str, reason: str, detail: str) -> None:
        """Record a skipped clip; returns None (the sample LitData leaves out)."""
        log.warning("skipping %s: %s (%s)", path, reason, detail)
        self._log({"failed": path, "reason": reason, "detail": detail})
        return None

    def _log(self, record: dict[str, Any]) -> None:
        """Append one JSON line to this process's write log."""
        with open(Path(self.log_dir) / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def _check_options(audio_format: str, sample_rate: Optional[int], channels: Optional[int],
                   chunk_size: Optional[int], chunk_bytes: Optional[int], workers: int) -> None:
    """Raise ValueError naming the bad option."""
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}, got {audio_format!r}")
    if audio_format == "original" and (sample_rate or channels):
        raise ValueError("audio_format='original' keeps the files as they are: drop sample_rate and channels")
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if channels is not None and channels <= 0:
        raise ValueError(f"channels must be > 0, got {channels}")
    if chunk_size is not None and chunk_size <= 0:
        raise ValueError(f"chunk_size (--max-clips-per-chunk) must be > 0, got {chunk_size}")
    if chunk_bytes is not None and chunk_bytes <= 0:
        raise ValueError(f"chunk_bytes (--chunk-bytes) must be > 0, got {chunk_bytes}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")


def _clear_previous(out: Path, splits: Sequence[str]) -> None:
    """Delete dataset.json and the chunks and LitData indexes of an earlier run (nothing else)."""
    (out / DATASET_FILE).unlink(missing_ok=True)
    shutil.rmtree(out / _LOG_DIR, ignore_errors=True)
    for folder in [p for p in out.iterdir() if p.is_dir()]:
        if (folder / LITDATA_INDEX).is_file() or folder.name in splits:
            for path in folder.iterdir():
                if path.name == LITDATA_INDEX or _CHUNK_RE.fullmatch(path.name):
                    path.unlink()


def _split_jobs(manifest: PathLike, split: str, shuffle: bool, seed: int) -> list[Job]:
    """(key, path, row) of a split's rows in writing order (seeded shuffle), with unique keys."""
    rows = read_manifest(manifest, split)
    if shuffle:
        order = np.random.default_rng([int(seed), zlib.crc32(split.encode())]).permutation(len(rows))
        rows = [rows[i] for i in order]
    jobs, used = [], set()
    for position, row in enumerate(rows):
        key = base = sample_key(row, position)
        suffix = 1
        while key in used:
            key, suffix = f"{base}_{suffix}", suffix + 1
        used.add(key)
        jobs.append((key, str(row["path"]), {k: v for k, v in row.items()}))
    return jobs


def _read_log(log_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(written, failed) records of the optimize workers, sorted for a deterministic report."""
    written, failed = [], []
    for path in sorted(log_dir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            (written if "ok" in record else failed).append(record)
    return sorted(written, key=lambda r: r["ok"]), sorted(failed, key=lambda r: (r["failed"], r["reason"]))


def default_start_method() -> str:
    """'forkserver' where the platform has it, else 'spawn'.

    The fork server imports this module (torch, torchaudio) once, and the optimize workers fork from it in
    milliseconds; plain 'fork' from a process whose threads (LitData's, a DataLoader's) hold locks can hang.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    multiprocessing.get_context("forkserver").set_forkserver_preload([__name__])
    return "forkserver"


def write_streaming_dataset(
    manifest: PathLike,
    out_dir: PathLike,
    *,
    splits: Optional[Sequence[str]] = None,
    sample_rate: Optional[int] = None,
    channels: Optional[int] = None,
    audio_format: str = "pcm16",
    chunk_size: Optional[int] = None,
    chunk_bytes: Optional[int] = 64 * 2**20,
    shuffle: bool = True,
    seed: int = 0,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = False,
    start_method: Optional[str] = None,
) -> StreamReport:
    """Write the manifest's clips as one LitData dataset per split, plus dataset.json (see `format`).

    ``pcm16`` decodes each file once (at `sample_rate` / `channels` when given, else as the source) and
    stores int16 samples; ``original`` stores the file's bytes. Chunks close at `chunk_bytes` (or at
    `chunk_size` clips). `workers` optimize processes (0 or 1: one). Unreadable files are skipped and counted.
    """
    start = time.perf_counter()
    _check_options(audio_format, sample_rate, channels, chunk_size, chunk_bytes, workers)
    if is_url(str(out_dir)):
        raise ValueError(f"out_dir {out_dir}: write to a local folder, then copy it (e.g. `aws s3 sync`)")
    out = Path(out_dir).expanduser()
    if (out / DATASET_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out / DATASET_FILE} exists: pass overwrite=True (--overwrite) to replace it")
    present = _manifest_splits(manifest)
    wanted = list(splits) if splits else present
    missing = [s for s in wanted if s not in present]
    if missing:
        raise ValueError(f"split(s) {missing} not in {manifest} (splits present: {present})")
    bad = [s for s in wanted if not _SPLIT_RE.fullmatch(s)]
    if bad:
        raise ValueError(f"split names {bad} cannot be folder names (use letters, digits, '_' and '-')")

    import litdata

    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out, wanted)
    report = StreamReport(out_dir=out)
    info: dict[str, Any] = {
        "format": DATASET_FORMAT, "version": DATASET_VERSION, "manifest": model_identity(manifest),
        "audio_format": audio_format, "sample_rate": sample_rate, "channels": channels, "shuffled": bool(shuffle),
        "seed": int(seed), "chunk_size": chunk_size, "chunk_bytes": chunk_bytes, "workers": max(1, workers),
        "litdata": litdata.__version__, "splits": {},
    }
    log_root = out / _LOG_DIR
    for split in wanted:
        jobs = _split_jobs(manifest, split, shuffle, seed)
        log_dir = log_root / split
        log_dir.mkdir(parents=True, exist_ok=True)
        folder = out / split
        if jobs:
            previous_start_method = multiprocessing.get_start_method(allow_none=True)
            try:
                litdata.optimize(
                    fn=ClipEncoder(sample_rate, channels, audio_format, str(log_dir)), inputs=jobs,
                    output_dir=str(folder), chunk_size=chunk_size, chunk_bytes=None if chunk_size else chunk_bytes,
                    num_workers=min(max(1, workers), len(jobs)), keep_data_ordered=True, reorder_files=False,
                    verbose=progress, start_method=start_method or default_start_method(),
                )
            finally:
                # LitData makes its start method the process-wide default (set_start_method(force=True)); restore
                # it, or every later DataLoader worker of this process starts through the fork server and
                # re-imports what its dataset and collate function need (seconds per worker, every epoch).
                multiprocessing.set_start_method(previous_start_method, force=True)
        written, failed = _read_log(log_dir)
        for record in failed:
            report.failed[record["reason"]] += 1
            report.failed_files.append((record["failed"], record["reason"], record["detail"]))
        index = json.loads((folder / LITDATA_INDEX).read_text()) if (folder / LITDATA_INDEX).is_file() else None
        chunks = index["chunks"] if index else []
        clips = sum(int(c["chunk_size"]) for c in chunks)
        if clips != len(written):
            raise RuntimeError(f"{folder}: LitData wrote {clips} clips but the workers encoded {len(written)}")
        size = sum(int(c["chunk_bytes"]) for c in chunks)
        info["splits"][split] = {"clips": clips, "bytes": size, "chunks": len(chunks),
                                 "seconds": round(sum(r["seconds"] for r in written), 3)}
        report.clips[split], report.chunks[split] = clips, len(chunks)
        report.bytes += size
    shutil.rmtree(log_root, ignore_errors=True)
    info["failed"] = dict(sorted(report.failed.items()))
    info["failed_files"] = [list(f) for f in report.failed_files]
    write_text_atomic(out / DATASET_FILE, json.dumps(info, indent=1))
    report.info_path = out / DATASET_FILE
    report.seconds = time.perf_counter() - start
    return report


def _manifest_splits(manifest: PathLike) -> list[str]:
    """Split names in a manifest, in order of first appearance (reads only that column)."""
    path = Path(manifest)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "split" not in (reader.fieldnames or []):
            raise ValueError(f"{path} is not a manifest: no 'split' column")
        return list(dict.fromkeys(row["split"] for row in reader))
