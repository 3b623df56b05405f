"""Xeno-canto metadata files (API pages, JSON lists, CSV) and matching their records to the recordings on disk.

A record is matched to a file by its ``file-name`` (basename, case-insensitive), else by its XC id in the
file name (``XC12345.mp3``, ``xc12345-Turdus merula.flac``, ``12345.wav``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

from main.files import PathLike

from ..audio import is_audio_path
from ..labels import en_name_of, parse_list, sci_name_of

log = logging.getLogger(__name__)

# Metadata columns copied from a source record (Xeno-canto key -> manifest column).
XC_FIELDS: dict[str, str] = {
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
META_COLUMNS = ("subspecies", "country", "location", "lat", "lng", "type", "quality", "date", "time",
                 "recordist", "license", "url")
_METADATA_EXTENSIONS = frozenset({".json", ".csv", ".txt", ".md", ".py", ".yaml", ".yml", ".log", ".html"})
_XC_ID_RE = re.compile(r"(?:^|[^a-z0-9])xc[-_ ]?(\d+)", re.IGNORECASE)


@dataclass
class Candidate:
    """One source record: its resolved audio path (None when not found) and normalised metadata."""

    path: Optional[str]
    meta: dict[str, Any]
    given_label: str = ""


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
    for source, column in XC_FIELDS.items():
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


def xc_candidates(audio_dir: Path, metadata: Sequence[Path]) -> tuple[list[Candidate], int, list[str]]:
    """Candidates from Xeno-canto metadata matched to files; also duplicate count and unmatched audio files."""
    records: list[dict[str, Any]] = []
    for meta_path in metadata:
        records.extend(normalise_xc_record(r) for r in read_xc_metadata(meta_path))
    by_name, by_id, audio_files = _index_files(audio_dir)
    candidates: list[Candidate] = []
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
        candidates.append(Candidate(path, meta))
    unmatched = [p for p in audio_files if p not in used]
    return candidates, duplicates, unmatched
