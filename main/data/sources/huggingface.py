"""Recordings listed by a Hugging Face ``datasets`` folder saved with ``save_to_disk``.

The dataset needs ``file``, ``sci_name`` and ``label`` columns (a string ``label`` is used as the text
label; an integer class id is ignored and a label is made from the metadata). Other columns named like
manifest columns are carried over.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from .metadata import META_COLUMNS, XC_FIELDS, Candidate, normalise_xc_record, xc_id_from_filename


def hf_candidates(dataset_dir: Path) -> tuple[list[Candidate], int]:
    """Candidates from a Hugging Face dataset saved with `save_to_disk`; also the duplicate count."""
    try:
        import datasets
    except ImportError as error:
        raise ImportError(
            "reading a Hugging Face dataset needs the 'datasets' package: pip install datasets"
        ) from error
    loaded = datasets.load_from_disk(str(dataset_dir))
    parts = list(loaded.values()) if isinstance(loaded, Mapping) else [loaded]  # DatasetDict or Dataset
    wanted = {"file", "sci_name", "label", "id", "en_name", "also", "duration", "length", *META_COLUMNS, *XC_FIELDS}
    candidates: list[Candidate] = []
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


def _hf_candidate(row: Mapping[str, Any], dataset_dir: Path) -> Candidate:
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
    return Candidate(path, meta, label.strip() if isinstance(label, str) else "")
