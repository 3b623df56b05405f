"""The pre-encoded folder format, written by `main.preencode` and read by `main.data.latents.dataset`.

- `latents.bin`: float16/32 [total_frames, channels], all recordings back to back; `items.csv` holds each
  recording's frame offset/count, its split, label index and sci_name, and (pre-encoded with caption variants)
  `variants`: the numbers of its caption variants, space-separated (repeats kept).
- `text_tokens.bin`: [total_tokens, features] of the *unpadded* tokens of each distinct string, labels and caption
  variants together, each encoded once (ragged, so padding costs no disk); `text_offsets.npy` the start of each;
  `labels.json` the strings. A folder written before caption variants has no `variants` column: its recordings
  train on their one label.
- `meta.json`: shapes, dtype, sample rate, DiffAE downsampling factor, text encoder and max length.
- `encoded.csv` and `settings.json`: the journal of encoded recordings (the columns of `items.csv`, with the
  label as text) and the settings they were encoded with.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

LATENTS_FILE = "latents.bin"
ITEMS_FILE = "items.csv"
TEXT_TOKENS_FILE = "text_tokens.bin"
TEXT_OFFSETS_FILE = "text_offsets.npy"
LABELS_FILE = "labels.json"
META_FILE = "meta.json"
JOURNAL_FILE = "encoded.csv"
SETTINGS_FILE = "settings.json"
ITEM_COLUMNS = ["file", "split", "sci_name", "label", "offset", "frames"]  # of items.csv and encoded.csv
VARIANTS_COLUMN = "variants"  # after ITEM_COLUMNS with caption variants: number lists (items), JSON lists (journal)
DTYPES = {"float16": np.float16, "float32": np.float32}


def parse_journal(text: str) -> list[dict[str, Any]]:
    """The rows of a journal (`encoded.csv`) text, with integer offset and frames (and variants as a list)."""
    rows = [dict(r, offset=int(r["offset"]), frames=int(r["frames"])) for r in csv.DictReader(io.StringIO(text))]
    for row in rows:
        if VARIANTS_COLUMN in row:
            row[VARIANTS_COLUMN] = json.loads(row[VARIANTS_COLUMN] or "[]")
    return rows


def journal_columns(with_variants: bool) -> list[str]:
    """The columns of `encoded.csv` (and `items.csv`): ITEM_COLUMNS, then `variants` with caption variants."""
    return [*ITEM_COLUMNS, VARIANTS_COLUMN] if with_variants else list(ITEM_COLUMNS)


def journal_row(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A journal entry as written to `encoded.csv` (its variants as a JSON list)."""
    if VARIANTS_COLUMN not in entry:
        return dict(entry)
    return {**entry, VARIANTS_COLUMN: json.dumps(list(entry[VARIANTS_COLUMN]), ensure_ascii=False)}


def write_items(folder: Path, entries: Sequence[Mapping[str, Any]], label_index: Mapping[str, int]) -> None:
    """Write `items.csv`: the journal entries with each label (and caption variant) replaced by its number in
    `label_index`."""
    with_variants = any(VARIANTS_COLUMN in e for e in entries)
    with open(folder / ITEMS_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=journal_columns(with_variants))
        writer.writeheader()
        for e in entries:
            row = {**e, "label": label_index[str(e["label"])]}
            if with_variants:
                row[VARIANTS_COLUMN] = " ".join(str(label_index[v]) for v in e.get(VARIANTS_COLUMN, []))
            writer.writerow(row)


def read_items(folder: Path) -> list[dict[str, Any]]:
    """The rows of `items.csv`, with integer label, offset and frames, and `variants` a list of label numbers
    ([] in a folder pre-encoded without caption variants)."""
    with open(folder / ITEMS_FILE, newline="") as f:
        return [dict(row, label=int(row["label"]), offset=int(row["offset"]), frames=int(row["frames"]),
                     variants=[int(v) for v in (row.get(VARIANTS_COLUMN) or "").split()])
                for row in csv.DictReader(f)]


def read_meta(folder: Path) -> dict[str, Any]:
    """The `meta.json` of a pre-encoded folder (FileNotFoundError naming the command that writes it)."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: run `python -m main.preencode` first")
    return json.loads(meta_path.read_text())
