"""The pre-encoded folder format, written by `main.preencode` and read by `main.data.latents.dataset`.

- `latents.bin`: float16/32 [total_frames, channels], all recordings back to back; `items.csv` holds each
  recording's frame offset/count, its split, label index and sci_name.
- `text_tokens.bin`: [total_tokens, features] of the *unpadded* tokens of each unique label (ragged, so
  padding costs no disk), `text_offsets.npy` the start of each label; `labels.json` the label strings.
- `meta.json`: shapes, dtype, sample rate, DiffAE downsampling factor, text encoder and max length.
- `encoded.csv` and `settings.json`: the journal of encoded recordings (the columns of `items.csv`, with the
  label as text) and the settings they were encoded with.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

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
DTYPES = {"float16": np.float16, "float32": np.float32}


def parse_journal(text: str) -> list[dict[str, Any]]:
    """The rows of a journal (`encoded.csv`) text, with integer offset and frames."""
    return [dict(r, offset=int(r["offset"]), frames=int(r["frames"])) for r in csv.DictReader(io.StringIO(text))]


def write_items(folder: Path, entries: Iterable[Mapping[str, Any]], label_index: Mapping[str, int]) -> None:
    """Write `items.csv`: the journal entries with each label replaced by its number in `label_index`."""
    with open(folder / ITEMS_FILE, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=ITEM_COLUMNS)
        writer.writeheader()
        writer.writerows({**e, "label": label_index[str(e["label"])]} for e in entries)


def read_items(folder: Path) -> list[dict[str, Any]]:
    """The rows of `items.csv`, with integer label, offset and frames."""
    with open(folder / ITEMS_FILE, newline="") as f:
        return [dict(row, label=int(row["label"]), offset=int(row["offset"]), frames=int(row["frames"]))
                for row in csv.DictReader(f)]


def read_meta(folder: Path) -> dict[str, Any]:
    """The `meta.json` of a pre-encoded folder (FileNotFoundError naming the command that writes it)."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path} not found: run `python -m main.preencode` first")
    return json.loads(meta_path.read_text())
