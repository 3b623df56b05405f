"""Writing a manifest's clips as tar shards plus index.json (the format of `main.data.shards.format`)."""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import os
import re
import tarfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import soundfile as sf
import torch
import torchaudio

from main.files import PathLike, write_text_atomic

from ..audio import AudioReadError, read_audio, to_channels
from ..manifest import read_manifest
from .format import AUDIO_FORMATS, AUDIO_SUFFIXES, INDEX_FILE, INDEX_FORMAT, INDEX_VERSION, SHARD_NAME

log = logging.getLogger(__name__)

_TAR_BLOCK = tarfile.BLOCKSIZE  # 512
_TAR_RECORD = tarfile.RECORDSIZE  # 10240: tarfile pads the archive to a multiple of this
_SPLIT_RE = re.compile(r"[A-Za-z0-9_-]+")
_SHARD_PATH_RE = re.compile(r"[A-Za-z0-9_-]+/shard-\d{6,}\.tar")


@dataclass
class ShardReport:
    """Outcome of `write_shards`: clips and shards per split, failures by reason, sizes."""

    out_dir: Optional[Path] = None
    index_path: Optional[Path] = None
    clips: dict[str, int] = field(default_factory=dict)
    shards: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    failed: Counter = field(default_factory=Counter)
    failed_files: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        """A short human-readable report."""
        lines = [f"{split}: {self.clips[split]} clips in {self.shards[split]} shard(s)" for split in self.clips]
        lines.append(f"total {self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s")
        if self.failed:
            lines.append("skipped by reason: " + ", ".join(f"{k}={v}" for k, v in sorted(self.failed.items())))
            lines.extend(f"  {reason}\t{path}\t{detail}" for path, reason, detail in self.failed_files[:20])
            if len(self.failed_files) > 20:
                lines.append(f"  ... and {len(self.failed_files) - 20} more")
        if self.index_path:
            lines.append(f"index: {self.index_path}")
        return "\n".join(lines)


def sample_key(row: dict[str, Any], position: int) -> str:
    """A WebDataset key for a manifest row: XC<id> (or the id, or clip<position>) with only [A-Za-z0-9_-]."""
    xc_id = str(row.get("id") or "").strip()
    key = f"XC{xc_id}" if xc_id.isdigit() else xc_id or f"clip{position:09d}"
    return re.sub(r"[^A-Za-z0-9_-]", "_", key)[:80]


def encode_clip(path: str, sample_rate: Optional[int], channels: Optional[int]) -> tuple[bytes, dict[str, Any]]:
    """Decode a file, convert channels, resample, and encode 16-bit FLAC; returns (bytes, audio info)."""
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
    if audio.shape[0] > 8:
        raise AudioReadError(f"{path}: FLAC holds at most 8 channels, the file has {audio.shape[0]} (set channels)")
    out = np.clip(audio.numpy().T, -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, out, rate, format="FLAC", subtype="PCM_16")
    info = {"sample_rate": int(rate), "channels": int(out.shape[1]), "frames": int(out.shape[0]), "format": "flac"}
    return buffer.getvalue(), info


def _encode_job(job: tuple[str, str, dict[str, Any], Optional[int], Optional[int], str]) -> tuple[Any, ...]:
    """Pool worker: ('ok', key, ext, audio bytes, json bytes) or ('failed', path, reason, detail)."""
    key, path, row, sample_rate, channels, audio_format = job
    try:
        if audio_format == "original":
            ext = Path(path).suffix.lower().lstrip(".")
            if ext not in AUDIO_SUFFIXES:
                return ("failed", path, "unsupported", f"extension {ext!r} is not an audio extension")
            payload = Path(path).read_bytes()
            if not payload:
                return ("failed", path, "empty", "zero bytes")
            info = {"sample_rate": row.get("sample_rate"), "channels": row.get("channels"),
                    "frames": row.get("frames"), "format": ext}
        else:
            ext = "flac"
            payload, info = encode_clip(path, sample_rate, channels)
    except FileNotFoundError as error:
        return ("failed", path, "missing_file", str(error))
    except (AudioReadError, sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
        return ("failed", path, "unreadable", str(error))
    meta = {k: v for k, v in row.items() if k != "path"}
    meta.update(key=key, audio=info)
    return ("ok", key, ext, payload, json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8"))


def _padded(size: int) -> int:
    """Bytes a tar member of `size` bytes takes: header plus data rounded up to whole blocks."""
    return _TAR_BLOCK + -(-size // _TAR_BLOCK) * _TAR_BLOCK


class _ShardWriter:
    """Writes numbered tar shards into a folder, starting a new one at the clip or byte limit."""

    def __init__(self, folder: Path, root: Path, max_clips: int, max_bytes: int) -> None:
        self.folder, self.root = folder, root
        self.max_clips, self.max_bytes = max_clips, max_bytes
        self.entries: list[dict[str, Any]] = []
        self._tar: Optional[tarfile.TarFile] = None
        self._tmp: Optional[Path] = None
        self._clips = 0
        self._seconds = 0.0

    def add(self, key: str, members: Sequence[tuple[str, bytes]], seconds: float) -> None:
        """Append one sample (its members share `key`), rolling over to a new shard when a limit is hit."""
        size = sum(_padded(len(data)) for _, data in members)
        if self._tar is not None:
            final = -(-(self._tar.offset + size + 2 * _TAR_BLOCK) // _TAR_RECORD) * _TAR_RECORD
            if self._clips >= self.max_clips or final > self.max_bytes:
                self._close()
        if self._tar is None:
            self._open()
            if size + 2 * _TAR_BLOCK > self.max_bytes:
                log.warning("%s: %d bytes alone exceed max_shard_bytes=%d", key, size, self.max_bytes)
        assert self._tar is not None
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            self._tar.addfile(info, io.BytesIO(data))
        self._clips += 1
        self._seconds += seconds

    def _open(self) -> None:
        """Start the next shard (a hidden temporary file until closed)."""
        name = SHARD_NAME.format(len(self.entries))
        self._tmp = self.folder / f".{name}.tmp"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self._clips, self._seconds = 0, 0.0

    def _close(self) -> None:
        """Finish the current shard and record it."""
        if self._tar is None or self._tmp is None:
            return
        self._tar.close()
        final = self.folder / SHARD_NAME.format(len(self.entries))
        os.replace(self._tmp, final)
        self.entries.append({"path": final.relative_to(self.root).as_posix(), "clips": self._clips,
                             "bytes": final.stat().st_size, "seconds": round(self._seconds, 3)})
        self._tar, self._tmp = None, None

    def finish(self) -> list[dict[str, Any]]:
        """Close the last shard; returns the shard entries for the index."""
        self._close()
        return self.entries

    def abort(self) -> None:
        """Close and delete an unfinished shard."""
        if self._tar is not None:
            self._tar.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        self._tar, self._tmp = None, None


def _clear_previous(out: Path) -> None:
    """Delete the index and the shards of an earlier `write_shards` run in `out`."""
    index_path = out / INDEX_FILE
    if index_path.is_file():
        try:
            old = json.loads(index_path.read_text())
            for split in old.get("splits", {}).values():
                for shard in split.get("shards", []):
                    if _SHARD_PATH_RE.fullmatch(str(shard["path"])):  # never outside `out`
                        (out / shard["path"]).unlink(missing_ok=True)
        except (json.JSONDecodeError, OSError, AttributeError, KeyError, TypeError) as error:
            log.warning("%s: unreadable previous index (%s); removing shard-*.tar files only", index_path, error)
        index_path.unlink()
    for stale in out.glob("*/shard-*.tar"):
        stale.unlink()


def write_shards(
    manifest: PathLike,
    out_dir: PathLike,
    *,
    splits: Optional[Sequence[str]] = None,
    sample_rate: Optional[int] = None,
    channels: Optional[int] = None,
    audio_format: str = "flac",
    max_clips_per_shard: int = 1000,
    max_shard_bytes: int = 256 * 2**20,
    shuffle: bool = True,
    seed: int = 0,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> ShardReport:
    """Write the manifest's clips as tar shards, one set per split, plus index.json (see module docstring).

    ``audio_format="flac"`` re-encodes (at `sample_rate` / `channels` when given, else as the source);
    ``"original"`` stores the file's bytes unchanged. `shuffle` mixes rows (seeded) before sharding, so
    each shard holds many species. Files that fail to read are skipped and counted in the report.
    """
    start = time.perf_counter()
    if audio_format not in AUDIO_FORMATS:
        raise ValueError(f"audio_format must be one of {AUDIO_FORMATS}, got {audio_format!r}")
    if audio_format == "original" and (sample_rate or channels):
        raise ValueError("audio_format='original' keeps the files as they are: drop sample_rate and channels")
    if sample_rate is not None and sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
    if channels is not None and not 1 <= channels <= 8:
        raise ValueError(f"channels must be in 1..8 (FLAC), got {channels}")
    if max_clips_per_shard <= 0:
        raise ValueError(f"max_clips_per_shard must be > 0, got {max_clips_per_shard}")
    if max_shard_bytes <= 2 * _TAR_RECORD:
        raise ValueError(f"max_shard_bytes must exceed {2 * _TAR_RECORD}, got {max_shard_bytes}")
    out = Path(out_dir)
    if (out / INDEX_FILE).exists() and not overwrite:
        raise FileExistsError(f"{out / INDEX_FILE} exists: pass overwrite=True (--overwrite) to replace the shards")
    present = _manifest_splits(manifest)
    wanted = list(splits) if splits else present
    missing = [s for s in wanted if s not in present]
    if missing:
        raise ValueError(f"split(s) {missing} not in {manifest} (splits present: {present})")
    bad = [s for s in wanted if not _SPLIT_RE.fullmatch(s)]
    if bad:
        raise ValueError(f"split names {bad} cannot be folder names (use letters, digits, '_' and '-')")

    out.mkdir(parents=True, exist_ok=True)
    _clear_previous(out)
    report = ShardReport(out_dir=out)
    index: dict[str, Any] = {
        "format": INDEX_FORMAT, "version": INDEX_VERSION, "manifest": str(Path(manifest).resolve()),
        "audio_format": audio_format, "sample_rate": sample_rate, "channels": channels,
        "shuffled": bool(shuffle), "seed": int(seed), "splits": {},
    }
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        for split in wanted:
            split_rows = read_manifest(manifest, split)  # one split in memory at a time
            if shuffle:
                order = np.random.default_rng([int(seed), zlib.crc32(split.encode())]).permutation(len(split_rows))
                split_rows = [split_rows[i] for i in order]
            jobs, used = [], set()
            for position, row in enumerate(split_rows):
                key = base = sample_key(row, position)
                suffix = 1
                while key in used:
                    key, suffix = f"{base}_{suffix}", suffix + 1
                used.add(key)
                jobs.append((key, str(row["path"]), row, sample_rate, channels, audio_format))
            folder = out / split
            folder.mkdir(parents=True, exist_ok=True)
            writer = _ShardWriter(folder, out, max_clips_per_shard, max_shard_bytes)
            results: Iterable[tuple[Any, ...]]
            if pool is not None:
                results = pool.imap(_encode_job, jobs, chunksize=max(1, min(32, len(jobs) // (workers * 8) or 1)))
            else:
                results = map(_encode_job, jobs)
            if progress:
                from tqdm.auto import tqdm

                results = tqdm(results, total=len(jobs), desc=f"sharding {split}", unit="clip")
            try:
                for result in results:
                    if result[0] == "failed":
                        _, path, reason, detail = result
                        report.failed[reason] += 1
                        report.failed_files.append((path, reason, detail))
                        log.warning("skipping %s: %s (%s)", path, reason, detail)
                        continue
                    _, key, ext, payload, meta = result
                    audio = json.loads(meta)["audio"]
                    seconds = (audio["frames"] or 0) / audio["sample_rate"] if audio.get("sample_rate") else 0.0
                    writer.add(key, [(f"{key}.{ext}", payload), (f"{key}.json", meta)], seconds)
                entries = writer.finish()
            except BaseException:
                writer.abort()
                raise
            index["splits"][split] = {"clips": sum(e["clips"] for e in entries),
                                      "bytes": sum(e["bytes"] for e in entries), "shards": entries}
            report.clips[split] = index["splits"][split]["clips"]
            report.shards[split] = len(entries)
            report.bytes += index["splits"][split]["bytes"]
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    index["failed"] = dict(report.failed)
    write_text_atomic(out / INDEX_FILE, json.dumps(index, indent=1))
    report.index_path = out / INDEX_FILE
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
