"""Build a training manifest (CSV) from recordings plus metadata, validating every file first.

Sources:

* a folder of recordings with Xeno-canto API metadata: JSON pages as the API returns them
  (``{"recordings": [...], "page": ...}``), plain JSON lists of records, or CSV files with the same
  columns. A record is matched to a file by its ``file-name`` (basename, case-insensitive), else by its
  XC id in the file name (``XC12345.mp3``, ``xc12345-Turdus merula.flac``, ``12345.wav``)
  (`main.data.sources.metadata`).
* a Hugging Face ``datasets`` folder saved with ``save_to_disk`` with ``file``, ``sci_name`` and ``label``
  columns (a string ``label`` is used as the text label; an integer class id is ignored and a label is
  made from the metadata). Other columns named like manifest columns are carried over
  (`main.data.sources.huggingface`).

Every file is decoded in full (`main.data.audio.check_audio`); rejected files are counted by reason in
a `PrepareReport` and listed in ``<manifest stem>.rejected.csv``; only good files reach the manifest.
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from main.files import PathLike, write_csv_atomic

from .audio import REASONS, AudioCheck, check_audio
from .labels import LABEL_STYLES, make_label
from .sources.huggingface import hf_candidates
from .sources.metadata import META_COLUMNS, Candidate, discover_metadata, xc_candidates
from .splits import DEFAULT_FRACTIONS, SPLIT_NAMES, assign_splits, split_counts

log = logging.getLogger(__name__)

MANIFEST_COLUMNS: tuple[str, ...] = (
    "file",
    "sci_name",
    "en_name",
    "label",
    "duration",
    "sample_rate",
    "channels",
    "split",
    "id",
    "frames",
    "format",
    "subspecies",
    "country",
    "location",
    "lat",
    "lng",
    "type",
    "quality",
    "date",
    "time",
    "also",
    "recordist",
    "license",
    "url",
)


@dataclass
class PrepareReport:
    """Outcome of `prepare_manifest`: counts by rejection reason, split sizes and where things went."""

    manifest_path: Optional[Path] = None
    rejected_path: Optional[Path] = None
    total: int = 0
    ok: int = 0
    missing_file: int = 0
    empty: int = 0
    unsupported: int = 0
    corrupt: int = 0
    too_long: int = 0
    non_finite: int = 0
    silent: int = 0
    duplicates: int = 0
    no_metadata: int = 0
    species: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, list[str]] = field(default_factory=dict)
    unmatched_files: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """Rejected file counts by reason (every reason, zeros included)."""
        return {reason: int(getattr(self, reason)) for reason in REASONS}

    @property
    def bad(self) -> int:
        """Number of rejected records."""
        return sum(self.counts().values())

    def summary(self) -> str:
        """A short human-readable report."""
        lines = [
            f"records: {self.total}  good: {self.ok}  rejected: {self.bad}  species: {self.species}"
            f"  ({self.seconds:.1f} s)",
            "rejected by reason: " + ", ".join(f"{k}={v}" for k, v in self.counts().items()),
            "splits: " + ", ".join(f"{k}={v}" for k, v in self.splits.items()),
        ]
        if self.duplicates:
            lines.append(f"duplicate records ignored: {self.duplicates}")
        if self.no_metadata:
            lines.append(f"audio files without a metadata record (not in the manifest): {self.no_metadata}")
        if self.manifest_path:
            lines.append(f"manifest: {self.manifest_path}")
        if self.rejected_path and self.bad:
            lines.append(f"rejected files: {self.rejected_path}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- validation and output


def _check_worker(job: tuple[Optional[str], float, float]) -> AudioCheck:
    """Pool worker: validate one file."""
    path, max_seconds, silence_dbfs = job
    if path is None:
        return AudioCheck("", "missing_file", "no file matches the record")
    return check_audio(path, max_seconds=max_seconds, silence_dbfs=silence_dbfs)


def check_files(
    paths: Sequence[Optional[str]],
    max_seconds: float = 300.0,
    silence_dbfs: float = -90.0,
    workers: int = 0,
    progress: bool = False,
) -> list[AudioCheck]:
    """`check_audio` on every path (None counts as missing), in order, optionally in a process pool."""
    jobs = [(p, max_seconds, silence_dbfs) for p in paths]
    results: Iterator[AudioCheck]
    if workers > 1 and len(jobs) > 1:
        context = multiprocessing.get_context("spawn")
        chunk = max(1, min(64, len(jobs) // (workers * 8)))
        with context.Pool(workers) as pool:
            results = pool.imap(_check_worker, jobs, chunksize=chunk)
            return list(_progress(results, len(jobs), progress))
    return list(_progress(map(_check_worker, jobs), len(jobs), progress))


def _progress(items: Iterable[AudioCheck], total: int, enabled: bool) -> Iterable[AudioCheck]:
    """Wrap with a tqdm bar when enabled."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, total=total, desc="checking audio", unit="file")


def _relative(path: str, root: Path) -> str:
    """`path` relative to `root` (POSIX separators) when inside it, else absolute."""
    absolute = Path(os.path.abspath(path))  # symlinks are kept, not resolved
    try:
        return absolute.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return str(absolute)


def _atomic_write_csv(path: Path, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Write a CSV through a temporary file and an atomic rename."""
    write_csv_atomic(path, rows, columns)


def prepare_manifest(
    audio_dir: Optional[PathLike] = None,
    *,
    metadata: Optional[Sequence[PathLike]] = None,
    hf_dataset: Optional[PathLike] = None,
    output: Optional[PathLike] = None,
    max_seconds: float = 300.0,
    silence_dbfs: float = -90.0,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    split_names: Sequence[str] = SPLIT_NAMES,
    seed: int = 0,
    label_style: str = "simple",
    label_fields: Optional[Sequence[str]] = None,
    workers: int = 0,
    progress: bool = False,
) -> PrepareReport:
    """Validate every file, label and split the good ones, write the manifest CSV and return the report."""
    start = time.perf_counter()
    if label_style not in LABEL_STYLES:
        raise ValueError(f"label_style must be one of {LABEL_STYLES}, got {label_style!r}")
    if (audio_dir is None) == (hf_dataset is None):
        raise ValueError("give exactly one source: audio_dir (with Xeno-canto metadata) or hf_dataset")
    if max_seconds <= 0:
        raise ValueError(f"max_seconds must be positive, got {max_seconds}")

    report = PrepareReport()
    if audio_dir is not None:
        root = Path(audio_dir)
        if not root.is_dir():
            raise ValueError(f"audio_dir {root} is not a folder")
        out_path = Path(output) if output is not None else root / "manifest.csv"
        rejected_path = out_path.with_name(out_path.stem + ".rejected.csv")
        meta_paths = [Path(p) for p in metadata] if metadata else discover_metadata(root, [out_path, rejected_path])
        if not meta_paths:
            raise ValueError(f"no Xeno-canto metadata (*.json / *.csv) found in {root}; pass metadata=...")
        for meta_path in meta_paths:
            if not meta_path.is_file():
                raise ValueError(f"metadata file {meta_path} does not exist")
        candidates, report.duplicates, unmatched = xc_candidates(root, meta_paths)
        report.unmatched_files = unmatched
        report.no_metadata = len(unmatched)
    else:
        dataset_dir = Path(hf_dataset)  # type: ignore[arg-type]
        if not dataset_dir.is_dir():
            raise ValueError(f"hf_dataset {dataset_dir} is not a folder")
        out_path = Path(output) if output is not None else dataset_dir.parent / f"{dataset_dir.name}.manifest.csv"
        rejected_path = out_path.with_name(out_path.stem + ".rejected.csv")
        candidates, report.duplicates = hf_candidates(dataset_dir)

    checks = check_files([c.path for c in candidates], max_seconds, silence_dbfs, workers, progress)
    report.total = len(candidates)
    manifest_dir = out_path.parent
    rows: list[dict[str, Any]] = []
    rejected_rows: list[dict[str, Any]] = []
    for candidate, check in zip(candidates, checks):
        if check.reason is not None:
            setattr(report, check.reason, getattr(report, check.reason) + 1)
            shown = candidate.path or f"XC{candidate.meta['id']} ({candidate.meta.get('file-name') or 'no file'})"
            report.rejected.setdefault(check.reason, []).append(shown)
            rejected_rows.append({"file": shown, "id": candidate.meta["id"], "reason": check.reason,
                                  "detail": check.detail})
            continue
        rows.append(_manifest_row(candidate, check, manifest_dir, label_style, label_fields))
    report.ok = len(rows)

    rows.sort(key=lambda r: (r["file"], r["id"]))
    splits = assign_splits([r["id"] for r in rows], [r["sci_name"] for r in rows], fractions, seed, split_names)
    for row, split in zip(rows, splits):
        row["split"] = split
    report.splits = {name: split_counts(splits).get(name, 0) for name in split_names}
    report.species = len({r["sci_name"] for r in rows})

    _atomic_write_csv(out_path, MANIFEST_COLUMNS, rows)
    _atomic_write_csv(rejected_path, ("file", "id", "reason", "detail"), rejected_rows)
    report.manifest_path = out_path
    report.rejected_path = rejected_path
    report.seconds = time.perf_counter() - start
    return report


def _manifest_row(
    candidate: Candidate, check: AudioCheck, manifest_dir: Path, style: str, fields: Optional[Sequence[str]]
) -> dict[str, Any]:
    """One manifest row for a good file."""
    meta = candidate.meta
    if not meta["sci_name"]:
        log.warning("%s: record %s has no scientific name", check.path, meta["id"])
    row: dict[str, Any] = {column: meta.get(column, "") for column in META_COLUMNS}
    row.update(
        file=_relative(check.path, manifest_dir),
        sci_name=meta["sci_name"],
        en_name=meta["en_name"],
        duration=f"{check.duration:.3f}",
        sample_rate=check.sample_rate,
        channels=check.channels,
        id=meta["id"],
        frames=check.frames,
        format=check.format,
        also="; ".join(meta["also"]),
    )
    row["label"] = candidate.given_label or make_label({**row, "also": meta["also"]}, style, fields)
    return row


# ----------------------------------------------------------------------------- reading a manifest

_INT_COLUMNS = ("sample_rate", "channels", "frames")
_FLOAT_COLUMNS = ("duration",)


def read_manifest(path: PathLike, split: Optional[str] = None) -> list[dict[str, Any]]:
    """Rows of a manifest (all, or one split), typed, each with `path`: the audio file's absolute path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest {path} does not exist")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "sci_name", "label", "split"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} is not a manifest: missing column(s) {sorted(missing)}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if split is not None and row["split"] != split:
                continue
            try:
                for column in _INT_COLUMNS:
                    if row.get(column):
                        row[column] = int(row[column])  # type: ignore[assignment]
                for column in _FLOAT_COLUMNS:
                    if row.get(column):
                        row[column] = float(row[column])  # type: ignore[assignment]
            except ValueError as error:
                raise ValueError(f"{path}:{line}: bad number ({error})") from error
            file_path = Path(row["file"])
            row["path"] = str(file_path if file_path.is_absolute() else path.parent / file_path)
            rows.append(row)
    return rows


def species_counts(rows: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Number of rows per scientific name."""
    return Counter(str(r["sci_name"]) for r in rows)
