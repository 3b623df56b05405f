"""Build a training manifest (CSV) from recordings plus metadata, validating every file first.

Sources:

* a folder of recordings with Xeno-canto API metadata: JSON pages as the API returns them
  (``{"recordings": [...], "page": ...}``), plain JSON lists of records, or CSV files with the same
  columns. A record is matched to a file by its ``file-name`` (basename, case-insensitive), else by its
  XC id in the file name (``XC12345.mp3``, ``xc12345-Turdus merula.flac``, ``12345.wav``).
* a Hugging Face ``datasets`` folder saved with ``save_to_disk`` with ``file``, ``sci_name`` and ``label``
  columns (a string ``label`` is used as the text label; an integer class id is ignored and a label is
  made from the metadata). Other columns named like manifest columns are carried over.

Every file is decoded in full (`main.data.audio.check_audio`); rejected files are counted by reason in
a `PrepareReport` and listed in ``<manifest stem>.rejected.csv``; only good files reach the manifest.
"""

from __future__ import annotations

import csv
import json
import logging
import multiprocessing
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence, Union

from .audio import REASONS, AudioCheck, check_audio, is_audio_path
from .labels import LABEL_STYLES, en_name_of, make_label, parse_list, sci_name_of
from .splits import DEFAULT_FRACTIONS, SPLIT_NAMES, assign_splits, split_counts

from main.files import write_csv_atomic

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]

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
# Metadata columns copied from a source record (Xeno-canto key -> manifest column).
_XC_FIELDS: dict[str, str] = {
    "ssp": "subspecies",
    "cnt": "country",
    "loc": "location",
    "lat": "lat",
    "lng": "lng",
    "lon": "lng",
    "type": "type",
    "q": "quality",
    "date": "date",
    "time": "time",
    "rec": "recordist",
    "lic": "license",
    "url": "url",
}
_META_COLUMNS = ("subspecies", "country", "location", "lat", "lng", "type", "quality", "date", "time",
                 "recordist", "license", "url")
_METADATA_EXTENSIONS = frozenset({".json", ".csv", ".txt", ".md", ".py", ".yaml", ".yml", ".log", ".html"})
_XC_ID_RE = re.compile(r"(?:^|[^a-z0-9])xc[-_ ]?(\d+)", re.IGNORECASE)


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


@dataclass
class _Candidate:
    """One source record: its resolved audio path (None when not found) and normalised metadata."""

    path: Optional[str]
    meta: dict[str, Any]
    given_label: str = ""


# ----------------------------------------------------------------------------- Xeno-canto metadata


def read_xc_metadata(path: PathLike) -> list[dict[str, Any]]:
    """Xeno-canto records from a JSON page, a JSON list of records, a JSON-lines file or a CSV file."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            return [dict(row) for row in csv.DictReader(handle)]
    text = path.read_text(encoding="utf-8-sig")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        try:  # JSON lines: one record (or page) per line
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
    return _records_from_json(data, path)


def _records_from_json(data: Any, path: Path) -> list[dict[str, Any]]:
    """Flatten API pages / lists / single records into a list of record dicts."""
    if isinstance(data, dict):
        if "recordings" in data:
            if not isinstance(data["recordings"], list):
                raise ValueError(f"{path}: 'recordings' is not a list")
            return [dict(r) for r in data["recordings"]]
        if "id" in data:
            return [dict(data)]
        raise ValueError(f"{path}: a JSON object without 'recordings' or 'id' is not Xeno-canto metadata")
    if isinstance(data, list):
        records: list[dict[str, Any]] = []
        for item in data:
            if not isinstance(item, dict):
                raise ValueError(f"{path}: expected records (objects), found {type(item).__name__}")
            records.extend(_records_from_json(item, path) if "recordings" in item else [dict(item)])
        return records
    raise ValueError(f"{path}: expected a Xeno-canto page or a list of records, found {type(data).__name__}")


def _normalise_key(key: str) -> str:
    """Lower-case a column name and accept file_name/filename for file-name."""
    key = key.strip().lower()
    return "file-name" if key in ("file_name", "filename", "file-name") else key


def normalise_xc_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """Manifest-style metadata (id, sci_name, en_name, country, ..., also as a list) from an XC record."""
    rec = {_normalise_key(str(k)): v for k, v in record.items()}
    meta: dict[str, Any] = {
        "id": str(rec.get("id", "")).strip(),
        "sci_name": sci_name_of(rec),
        "en_name": en_name_of(rec),
        "also": parse_list(rec.get("also")),
        "length": rec.get("length", ""),
        "file-name": str(rec.get("file-name") or "").strip(),
    }
    local_file = str(rec.get("file") or "").strip()  # the API's `file` is a download URL; a CSV may hold a path
    if not meta["file-name"] and local_file and not re.match(r"^(https?:)?//", local_file):
        meta["file-name"] = Path(local_file).name
    for source, column in _XC_FIELDS.items():
        value = rec.get(column) if column in rec else rec.get(source)
        if value is None or (column in meta and meta[column]):
            continue
        meta[column] = ", ".join(parse_list(value)) if column == "type" else str(value).strip()
    if str(meta.get("url", "")).startswith("//"):
        meta["url"] = "https:" + meta["url"]
    return meta


def xc_id_from_filename(name: str) -> Optional[str]:
    """The XC id in a file name ('XC12345-x.mp3' -> '12345', '12345.wav' -> '12345'), or None."""
    stem = Path(name).stem
    match = _XC_ID_RE.search(stem)
    if match:
        return match.group(1)
    return stem if stem.isdigit() else None


def _index_files(root: Path) -> tuple[dict[str, list[str]], dict[str, list[str]], list[str]]:
    """Maps basename (lower-case) -> paths and XC id -> paths for files under `root`, plus the audio files.

    Hidden files and folders and metadata-like files (.json, .csv, ...) are not indexed.
    """
    by_name: dict[str, list[str]] = {}
    by_id: dict[str, list[str]] = {}
    audio: list[str] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(folder) / name
            if name.startswith(".") or path.suffix.lower() in _METADATA_EXTENSIONS:
                continue
            by_name.setdefault(name.lower(), []).append(str(path))
            xc_id = xc_id_from_filename(name)
            if xc_id is not None:
                by_id.setdefault(xc_id, []).append(str(path))
            if is_audio_path(path):
                audio.append(str(path))
    return by_name, by_id, audio


def _is_manifest_csv(path: Path) -> bool:
    """Whether a CSV looks like one of our manifests (so it is not read as metadata)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    return {"file", "label", "split"} <= {h.strip().lower() for h in header}


def discover_metadata(audio_dir: PathLike, exclude: Iterable[Path] = ()) -> list[Path]:
    """JSON and CSV metadata files at the top level of `audio_dir` (our manifests and `exclude` skipped)."""
    excluded = {p.resolve() for p in exclude}
    found = []
    for path in sorted(Path(audio_dir).iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.resolve() in excluded:
            continue
        if path.suffix.lower() == ".json" and not path.name.endswith(".params.json"):
            found.append(path)
        elif path.suffix.lower() == ".csv" and not path.name.endswith(".rejected.csv") and not _is_manifest_csv(path):
            found.append(path)
    return found


def _xc_candidates(audio_dir: Path, metadata: Sequence[Path]) -> tuple[list[_Candidate], int, list[str]]:
    """Candidates from Xeno-canto metadata matched to files; also duplicate count and unmatched audio files."""
    records: list[dict[str, Any]] = []
    for meta_path in metadata:
        records.extend(normalise_xc_record(r) for r in read_xc_metadata(meta_path))
    by_name, by_id, audio_files = _index_files(audio_dir)
    candidates: list[_Candidate] = []
    seen_ids: set[str] = set()
    used: set[str] = set()
    duplicates = 0
    for index, meta in enumerate(records):
        if not meta["id"]:
            meta["id"] = f"record-{index}"
        if meta["id"] in seen_ids:
            duplicates += 1
            continue
        seen_ids.add(meta["id"])
        matches = by_name.get(Path(meta["file-name"]).name.lower(), []) if meta["file-name"] else []
        if not matches:
            matches = [p for p in by_id.get(meta["id"], []) if p not in used]
        if len(matches) > 1:
            log.warning("XC%s: %d files match, using %s", meta["id"], len(matches), matches[0])
        path = matches[0] if matches else None
        if path is not None:
            if path in used:
                duplicates += 1
                continue
            used.add(path)
        candidates.append(_Candidate(path, meta))
    unmatched = [p for p in audio_files if p not in used]
    return candidates, duplicates, unmatched


# ----------------------------------------------------------------------------- Hugging Face datasets


def _hf_candidates(dataset_dir: Path) -> tuple[list[_Candidate], int]:
    """Candidates from a Hugging Face dataset saved with `save_to_disk`; also the duplicate count."""
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            "reading a Hugging Face dataset needs the 'datasets' package: pip install datasets"
        ) from error
    loaded = datasets.load_from_disk(str(dataset_dir))
    parts = list(loaded.values()) if isinstance(loaded, Mapping) else [loaded]  # DatasetDict or Dataset
    wanted = {"file", "sci_name", "label", "id", "en_name", "also", "duration", "length", *_META_COLUMNS, *_XC_FIELDS}
    candidates: list[_Candidate] = []
    seen: set[str] = set()
    duplicates = 0
    for part in parts:
        missing = {"file", "sci_name"} - set(part.column_names)
        if missing:
            raise ValueError(
                f"{dataset_dir}: the dataset lacks column(s) {sorted(missing)}; it needs file, sci_name, label"
            )
        part = part.select_columns([c for c in part.column_names if c in wanted])
        for row in part.to_list():
            candidate = _hf_candidate(row, dataset_dir)
            key = candidate.path or f"id:{candidate.meta['id']}"
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            candidates.append(candidate)
    return candidates, duplicates


def _hf_candidate(row: Mapping[str, Any], dataset_dir: Path) -> _Candidate:
    """One candidate from a Hugging Face dataset row."""
    file_value = row.get("file")
    if isinstance(file_value, Mapping):  # an Audio feature stored as {"path": ..., "bytes": ...}
        file_value = file_value.get("path")
    path: Optional[str] = None
    if file_value:
        candidate = Path(str(file_value)).expanduser()
        if not candidate.is_absolute():
            candidate = dataset_dir / candidate
        path = str(candidate)
    meta = normalise_xc_record({k: v for k, v in row.items() if k not in ("file", "label")})
    if not row.get("id"):
        stem = Path(str(file_value or "")).name
        meta["id"] = xc_id_from_filename(stem) or Path(stem).stem or meta["id"]
    label = row.get("label")
    return _Candidate(path, meta, label.strip() if isinstance(label, str) else "")


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
        candidates, report.duplicates, unmatched = _xc_candidates(root, meta_paths)
        report.unmatched_files = unmatched
        report.no_metadata = len(unmatched)
    else:
        dataset_dir = Path(hf_dataset)  # type: ignore[arg-type]
        if not dataset_dir.is_dir():
            raise ValueError(f"hf_dataset {dataset_dir} is not a folder")
        out_path = Path(output) if output is not None else dataset_dir.parent / f"{dataset_dir.name}.manifest.csv"
        rejected_path = out_path.with_name(out_path.stem + ".rejected.csv")
        candidates, report.duplicates = _hf_candidates(dataset_dir)

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
    candidate: _Candidate, check: AudioCheck, manifest_dir: Path, style: str, fields: Optional[Sequence[str]]
) -> dict[str, Any]:
    """One manifest row for a good file."""
    meta = candidate.meta
    if not meta["sci_name"]:
        log.warning("%s: record %s has no scientific name", check.path, meta["id"])
    row: dict[str, Any] = {column: meta.get(column, "") for column in _META_COLUMNS}
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
