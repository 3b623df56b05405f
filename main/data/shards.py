"""WebDataset-compatible tar shards for millions of clips, and a streaming dataset that reads them.

Layout written by `write_shards` (``python -m main.data.shard``)::

    OUT/index.json                 shards per split with their clip counts and sizes, sample rate, channels
    OUT/train/shard-000000.tar     <key>.flac (or the original file's bytes, <key>.<ext>) + <key>.json
    OUT/valid/shard-000000.tar     ...

Each tar member is named ``<key>.<extension>`` as WebDataset expects (``webdataset.WebDataset(url)``
yields ``{"__key__": key, "flac": bytes, "json": bytes}``); keys hold no dots. The JSON is the manifest
row (label, sci_name, split, ...) plus ``key`` and ``audio`` (sample rate, channels, frames and format
of the stored audio). Written with the standard `tarfile` module (USTAR, mtime 0, fixed member order),
so the same manifest and options give byte-identical shards.

`ShardedAudioDataset` streams one split. Per epoch the shards are shuffled with ``seed + epoch``
(training) and dealt to the (rank, worker) slots by clip count, greedily, so every shard is read by
exactly one (rank, DataLoader worker) per epoch. DDP needs every rank to make the same number of
batches, and each DataLoader worker batches its own samples, so worker ``w`` of every rank yields the
same number of samples: the most any rank's worker ``w`` holds (``uneven="pad"``: the others read their
shards again, with new crops) or the least (``uneven="drop"``). A shard always yields the number of
clips its index entry gives: a member that fails to decode, a missing shard or a truncated tar yields
None for each missing clip, which `collate_audio` skips and counts; so a bad shard cannot unbalance
the ranks either.

Epochs reach worker processes through a shared-memory counter: `ShardedDataLoader` (used by
`BirdSoundDataModule`) sets it from the trainer's epoch at each ``iter()``; with a plain DataLoader call
`ShardedAudioDataset.set_epoch` before each epoch, otherwise every pass after the first counts one epoch
further. Crops are seeded by (seed, epoch, pass over the shard, key), so they do not depend on the number
of ranks or workers.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import os
import re
import tarfile
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from .audio import AUDIO_EXTENSIONS, AudioReadError, read_audio
from .cropping import CropReader, to_channels
from .datamodule import normalize_loudness
from .manifest import read_manifest

from main.files import write_text_atomic

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]
Item = Optional[dict[str, Any]]

INDEX_FILE = "index.json"
INDEX_FORMAT = "bird-diffusion-shards"
INDEX_VERSION = 1
SHARD_NAME = "shard-{:06d}.tar"
AUDIO_FORMATS = ("flac", "original")
UNEVEN_MODES = ("pad", "drop")
_TAR_BLOCK = tarfile.BLOCKSIZE  # 512
_TAR_RECORD = tarfile.RECORDSIZE  # 10240: tarfile pads the archive to a multiple of this
_MEMBER_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # WebDataset's key / extension split
_SPLIT_RE = re.compile(r"[A-Za-z0-9_-]+")
_SHARD_PATH_RE = re.compile(r"[A-Za-z0-9_-]+/shard-\d{6,}\.tar")
_AUDIO_SUFFIXES = tuple(sorted(ext.lstrip(".") for ext in AUDIO_EXTENSIONS))


# ----------------------------------------------------------------------------- writing


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
            if ext not in _AUDIO_SUFFIXES:
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


# ----------------------------------------------------------------------------- assignment to ranks and workers


def assign_shards(
    counts: Sequence[int], world_size: int, num_workers: int, epoch: int, seed: int = 0, shuffle: bool = True
) -> list[list[list[int]]]:
    """Shard indices for each [rank][worker]: shards in (seed + epoch) order, each to the least-loaded slot.

    Every shard goes to exactly one slot. Slots are visited worker-major (worker 0 of every rank, then
    worker 1, ...), so when shards are equal the leftover ones spread over the ranks of the same worker.
    """
    if world_size < 1 or num_workers < 1:
        raise ValueError(f"world_size and num_workers must be >= 1, got {world_size}, {num_workers}")
    order = list(range(len(counts)))
    if shuffle:
        order = torch.randperm(len(counts), generator=torch.Generator().manual_seed(int(seed) + int(epoch))).tolist()
    slots = world_size * num_workers  # slot s = worker * world_size + rank
    loads = [0] * slots
    assigned: list[list[int]] = [[] for _ in range(slots)]
    for shard in order:
        slot = min(range(slots), key=lambda s: (loads[s], s))
        assigned[slot].append(shard)
        loads[slot] += int(counts[shard])
    return [[assigned[w * world_size + r] for w in range(num_workers)] for r in range(world_size)]


def worker_quotas(
    counts: Sequence[int], assignment: Sequence[Sequence[Sequence[int]]], uneven: str = "pad"
) -> list[int]:
    """Samples every rank's worker w yields: the most (pad) or least (drop) any rank's worker w holds."""
    if uneven not in UNEVEN_MODES:
        raise ValueError(f"uneven must be one of {UNEVEN_MODES}, got {uneven!r}")
    num_workers = len(assignment[0])
    ranks = range(len(assignment))
    loads = [[sum(int(counts[s]) for s in assignment[r][w]) for r in ranks] for w in range(num_workers)]
    pick = max if uneven == "pad" else min
    return [pick(per_rank) for per_rank in loads]


# ----------------------------------------------------------------------------- reading


class ShardedAudioDataset(CropReader, IterableDataset):
    """Fixed-length clips (and labels) streamed from the tar shards of one split; None for a bad sample.

    Same items as `AudioDataset`: ``{"audio": [channels, crop_length], "text": label}`` (text with
    `with_text`; ``"key"`` too with `with_key`), resampled to `sample_rate`, channels converted (mono is
    duplicated), zero-padded at the end, randomly cropped when `random_crop` (decoded by `CropReader`,
    as `AudioDataset`). `shuffle` reorders the shards every epoch; `shuffle_buffer` > 0 also mixes
    samples through a seeded in-memory buffer.
    `rank` / `world_size` default to torch.distributed (then $RANK / $WORLD_SIZE, then 0 / 1).
    """

    def __init__(
        self,
        shards: PathLike,
        split: str = "train",
        sample_rate: int = 32000,
        crop_length: int = 2**18,
        channels: int = 2,
        random_crop: bool = False,
        with_text: bool = False,
        seed: int = 0,
        shuffle: bool = False,
        shuffle_buffer: int = 0,
        loudness_normalize: bool = False,
        target_dbfs: float = -20.0,
        loudness_max_peak: Optional[float] = 1.0,
        uneven: str = "pad",
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        with_key: bool = False,
    ) -> None:
        self._init_crop(sample_rate, crop_length, channels)
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        if uneven not in UNEVEN_MODES:
            raise ValueError(f"uneven must be one of {UNEVEN_MODES}, got {uneven!r}")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if world_size is not None and not 0 <= int(rank) < int(world_size):  # type: ignore[arg-type]
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.split = split
        entries = split_shards(shards, split)
        self.shard_paths: list[str] = [str(path) for path, _ in entries]
        self.shard_counts: list[int] = [clips for _, clips in entries]
        self.random_crop = random_crop
        self.with_text = with_text
        self.with_key = with_key
        self.seed = int(seed)
        self.shuffle = shuffle
        self.shuffle_buffer = int(shuffle_buffer)
        self.loudness_normalize = loudness_normalize
        self.target_dbfs = float(target_dbfs)
        self.loudness_max_peak = loudness_max_peak
        self.uneven = uneven
        self.rank = rank
        self.world_size = world_size
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()  # seen by (persistent) workers
        self._next_epoch = 0
        self._pass_started = False
        self._frozen_rank: Optional[tuple[int, int]] = None

    @property
    def num_clips(self) -> int:
        """Clips in the split (all ranks together, one pass)."""
        return sum(self.shard_counts)

    @property
    def epoch(self) -> int:
        """The epoch of the current (or next) pass."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Use `epoch` for the next pass (shard order and crops); visible to running worker processes."""
        self._next_epoch = int(epoch)
        self._epoch.fill_(int(epoch))

    def begin_pass(self, epoch: Optional[int] = None) -> int:
        """Main process, before iter(): fix the pass's epoch (given, else set_epoch's, else last + 1) and rank."""
        epoch = self._next_epoch if epoch is None else int(epoch)
        self._next_epoch = epoch + 1
        self._epoch.fill_(epoch)
        self._pass_started = True
        self._frozen_rank = self.rank_and_world()
        return epoch

    def rank_and_world(self) -> tuple[int, int]:
        """(rank, world_size): as given, else torch.distributed, else frozen by begin_pass, else $RANK/$WORLD_SIZE."""
        if self.rank is not None and self.world_size is not None:
            return int(self.rank), int(self.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        if self._frozen_rank is not None:
            return self._frozen_rank
        if os.environ.get("RANK", "").isdigit() and os.environ.get("WORLD_SIZE", "").isdigit():
            return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return 0, 1

    def plan(self, world_size: int, num_workers: int, epoch: int) -> tuple[list[list[list[int]]], list[int]]:
        """Shard indices per [rank][worker] and the samples each worker index yields on every rank."""
        assignment = assign_shards(self.shard_counts, world_size, num_workers, epoch, self.seed, self.shuffle)
        return assignment, worker_quotas(self.shard_counts, assignment, self.uneven)

    def samples_per_rank(self, world_size: int = 1, num_workers: int = 1, epoch: int = 0) -> int:
        """Samples one rank yields in `epoch` (the same on every rank)."""
        return sum(self.plan(world_size, num_workers, epoch)[1])

    def __iter__(self) -> Iterator[Item]:
        """The samples of this process's (rank, worker) slot for the current epoch."""
        info = get_worker_info()
        if info is None:
            if not self._pass_started:
                self.begin_pass()
            self._pass_started = False
            worker, num_workers = 0, 1
        else:
            worker, num_workers = info.id, info.num_workers
        rank, world_size = self.rank_and_world()
        return self.iter_slot(rank, world_size, worker, num_workers, self.epoch)

    def iter_slot(self, rank: int, world_size: int, worker: int, num_workers: int, epoch: int) -> Iterator[Item]:
        """The samples of one (rank, worker) slot in `epoch`, shuffled through the buffer when enabled."""
        stream = self._slot_stream(rank, world_size, worker, num_workers, epoch)
        if self.shuffle_buffer > 1:
            rng = np.random.default_rng([self.seed, epoch, rank, worker, 1])
            stream = _buffer_shuffle(stream, self.shuffle_buffer, rng)
        return stream

    def _slot_stream(self, rank: int, world_size: int, worker: int, num_workers: int, epoch: int) -> Iterator[Item]:
        """Read the slot's shards (again, with new crops, while short of the quota) until the quota is met."""
        assignment, quotas = self.plan(world_size, num_workers, epoch)
        quota = quotas[worker]
        own = assignment[rank][worker]
        if quota <= 0:
            return
        if sum(self.shard_counts[s] for s in own) == 0:
            # Fewer (non-empty) shards than slots: repeat other slots' shards, as DistributedSampler pads.
            flat = [s for per_rank in assignment for per_worker in per_rank for s in per_worker
                    if self.shard_counts[s] > 0]
            shift = (rank * num_workers + worker) % len(flat)
            own = flat[shift:] + flat[:shift]
            log.warning("split %r: rank %d worker %d has no shard (%d shards for %d x %d slots); repeating others",
                        self.split, rank, worker, len(self.shard_counts), world_size, num_workers)
        produced, repeat = 0, 0
        while True:
            for shard in own:
                for item in self._read_shard(shard, epoch, repeat):
                    yield item
                    produced += 1
                    if produced >= quota:
                        return
            repeat += 1

    def _read_shard(self, shard: int, epoch: int, repeat: int) -> Iterator[Item]:
        """Exactly the index's clip count of items from one shard; None for each clip that fails."""
        path, expected = self.shard_paths[shard], self.shard_counts[shard]
        produced = 0
        try:
            for key, members in iter_tar_samples(path):
                if produced >= expected:
                    log.warning("%s holds more samples than its index entry (%d); ignoring the rest", path, expected)
                    break
                yield self._make_item(key, members, epoch, repeat, path)
                produced += 1
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
            log.warning("%s: unreadable after %d of %d samples (%s)", path, produced, expected, error)
        for _ in range(expected - produced):
            yield None

    def _make_item(self, key: str, members: dict[str, bytes], epoch: int, repeat: int, shard: str) -> Item:
        """Decode one sample; None (with a warning) when it fails."""
        try:
            ext = audio_member(members)
            label = None
            if self.with_text:
                if "json" not in members:
                    raise ValueError("no JSON member (needed for the label)")
                label = json.loads(members["json"].decode("utf-8"))["label"]
            audio = self._load_crop(members[ext], ext, key, epoch, repeat)
        except (AudioReadError, sf.LibsndfileError, RuntimeError, OSError, ValueError, KeyError, TypeError) as error:
            log.warning("skipping %s in %s: %s", key, shard, error)
            return None
        if self.loudness_normalize:
            audio = normalize_loudness(audio, self.target_dbfs, self.loudness_max_peak)
        out: dict[str, Any] = {"audio": audio}
        if self.with_text:
            out["text"] = str(label)
        if self.with_key:
            out["key"] = key
        return out

    # ------------------------------------------------------------------ decoding (as AudioDataset)

    def crop_start(self, total: int, key: str, epoch: int, repeat: int) -> int:
        """Crop start (target-rate samples): seeded by (seed, epoch, repeat, key) when training, else 0."""
        if not self.random_crop or total <= self.crop_length:
            return 0
        rng = np.random.default_rng([self.seed, epoch, repeat, zlib.crc32(key.encode("utf-8"))])
        return int(rng.integers(0, total - self.crop_length + 1))

    def _load_crop(self, payload: bytes, ext: str, key: str, epoch: int, repeat: int) -> Tensor:
        """Decode only the crop's stretch (plus resampler context / codec pre-roll) -> [channels, crop_length]."""
        return self._read_crop(io.BytesIO(payload), lambda total: self.crop_start(total, key, epoch, repeat),
                               lambda error: _decode_with_fallback(payload, ext))


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
    ext = next((e for e in members if e in _AUDIO_SUFFIXES), None)
    if ext is None:
        raise AudioReadError(f"no audio member (members: {sorted(members)})")
    return ext


def decode_audio_member(members: dict[str, bytes]) -> tuple[np.ndarray, int]:
    """The whole audio of one shard sample as float32 [frames, channels] and its rate."""
    ext = audio_member(members)
    try:
        data, rate = sf.read(io.BytesIO(members[ext]), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        data, rate = _decode_with_fallback(members[ext], ext)
    return data, int(rate)


def _decode_with_fallback(payload: bytes, ext: str) -> tuple[np.ndarray, int]:
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


def _buffer_shuffle(stream: Iterator[Item], size: int, rng: np.random.Generator) -> Iterator[Item]:
    """Mix a stream through a buffer of `size` items (each output picked at random from the buffer)."""
    buffer: list[Item] = []
    for item in stream:
        if len(buffer) < size:
            buffer.append(item)
            continue
        index = int(rng.integers(len(buffer)))
        buffer[index], item = item, buffer[index]
        yield item
    for index in rng.permutation(len(buffer)).tolist():
        yield buffer[index]


class ShardedDataLoader(DataLoader):
    """A DataLoader that starts each pass of its ShardedAudioDataset at the right epoch.

    `epoch_fn` (e.g. the trainer's current epoch) gives the epoch at each ``iter()``; when it returns
    None the dataset's own counter is used (set_epoch, else one more than the previous pass).
    """

    def __init__(self, dataset: ShardedAudioDataset, *args: Any,
                 epoch_fn: Optional[Callable[[], Optional[int]]] = None, **kwargs: Any) -> None:
        if not isinstance(dataset, ShardedAudioDataset):
            raise TypeError(f"ShardedDataLoader needs a ShardedAudioDataset, got {type(dataset).__name__}")
        super().__init__(dataset, *args, **kwargs)
        self.epoch_fn = epoch_fn

    def __iter__(self) -> Any:
        """Fix the dataset's epoch (visible to the workers), then iterate as a DataLoader."""
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        self.dataset.begin_pass(epoch)  # type: ignore[attr-defined]
        return super().__iter__()


def parse_size(text: str) -> int:
    """Bytes from '268435456', '256M', '1.5G', '512KiB' (K/M/G/T are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 268435456, 256M, 1G)")
    value, unit = float(match.group(1)), match.group(2)
    return int(value * 1024 ** ("kmgt".index(unit) + 1 if unit else 0))


__all__: Sequence[str] = (
    "ShardReport",
    "ShardedAudioDataset",
    "ShardedDataLoader",
    "assign_shards",
    "encode_clip",
    "parse_size",
    "read_index",
    "sample_key",
    "worker_quotas",
    "write_shards",
)
