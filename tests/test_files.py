"""Atomic writes: the target is the old file or the complete new one, and no temporary file is left."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from main.files import atomic_path, write_csv_atomic, write_text_atomic


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text_atomic(tmp_path / "sub" / "a.json", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_suffix_lets_format_inferring_writers_work(tmp_path):
    target = tmp_path / "latent.npy"
    with atomic_path(target, suffix=".npy") as tmp:
        assert tmp.name.endswith(".npy") and tmp.parent == tmp_path
        np.save(tmp, np.arange(3))  # np.save would append .npy to a name without it
    assert np.load(target).tolist() == [0, 1, 2] and len(list(tmp_path.iterdir())) == 1


def test_csv_keeps_only_the_columns(tmp_path):
    path = write_csv_atomic(tmp_path / "rows.csv", [{"a": 1, "b": 2, "extra": 3}], ["a", "b"])
    assert list(csv.DictReader(path.open())) == [{"a": "1", "b": "2"}]
