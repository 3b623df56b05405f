"""Sets of clips to evaluate (a folder written by `generate`/`reconstruct`, or a manifest split) and audio loading."""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from main.files import PathLike, write_csv_atomic

CLIPS_FILE = "clips.csv"
CLIP_COLUMNS: tuple[str, ...] = ("file", "label", "sci_name", "seed", "source")


@dataclass
class ClipSet:
    """Audio files with the species (and text label) each one was prompted with or recorded as."""

    name: str
    paths: list[str]
    species: list[str]
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.species):
            raise ValueError(f"{self.name}: {len(self.paths)} paths but {len(self.species)} species")
        if not self.labels:
            self.labels = list(self.species)
        if len(self.labels) != len(self.paths):
            raise ValueError(f"{self.name}: {len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Iterable[int], name: Optional[str] = None) -> "ClipSet":
        """The clips at `indices`, in that order."""
        idx = list(indices)
        return ClipSet(name or self.name, [self.paths[i] for i in idx], [self.species[i] for i in idx],
                       [self.labels[i] for i in idx])


def select_rows(
    rows: Sequence[Mapping[str, Any]], num: Optional[int] = None, per_species: Optional[int] = None, seed: int = 0,
    cycle: bool = True,
) -> list[Mapping[str, Any]]:
    """Pick manifest rows deterministically: all (num=None), `num` of a seeded shuffle, or `per_species` rows of
    each species. With `cycle` (prompts for generation) rows repeat to reach the count; without (real clips to
    compare with) the count is a cap."""
    if num is not None and per_species is not None:
        raise ValueError("give num or per_species, not both")
    if not rows:
        raise ValueError("no manifest rows to take labels from (empty split?)")
    ordered = sorted(rows, key=lambda r: (str(r["sci_name"]), str(r["file"])))
    rng = random.Random(seed)
    if per_species is not None:
        if per_species < 1:
            raise ValueError(f"per_species must be >= 1, got {per_species}")
        by_species: dict[str, list[Mapping[str, Any]]] = {}
        for row in ordered:
            by_species.setdefault(str(row["sci_name"]), []).append(row)
        picked = []
        for species in sorted(by_species):
            group = list(by_species[species])
            rng.shuffle(group)
            count = per_species if cycle else min(per_species, len(group))
            picked.extend(group[i % len(group)] for i in range(count))
        return picked
    shuffled = list(ordered)
    rng.shuffle(shuffled)
    if num is None:
        return shuffled
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    return [shuffled[i % len(shuffled)] for i in range(num if cycle else min(num, len(shuffled)))]


def clips_from_manifest(
    manifest: PathLike, split: Optional[str] = "test", num: Optional[int] = None, per_species: Optional[int] = None,
    seed: int = 0, name: Optional[str] = None,
) -> ClipSet:
    """The real recordings of a manifest split (all, or a deterministic selection of at most `num` / at most
    `per_species` per species) as a ClipSet."""
    from main.data.manifest import read_manifest

    rows = read_manifest(manifest, split)
    if not rows:
        raise ValueError(f"manifest {manifest} has no rows in split {split!r}")
    if num is not None or per_species is not None:
        rows = select_rows(rows, num, per_species, seed, cycle=False)
    return ClipSet(name or f"real {split}", [r["path"] for r in rows], [str(r["sci_name"]) for r in rows],
                   [str(r["label"]) for r in rows])


def write_clips_csv(folder: PathLike, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write `clips.csv` (file, label, sci_name, seed, source) into `folder`, atomically."""
    path = Path(folder) / CLIPS_FILE
    return write_csv_atomic(path, rows, CLIP_COLUMNS)


def read_clip_rows(folder: PathLike) -> list[dict[str, str]]:
    """The rows of `<folder>/clips.csv`."""
    path = Path(folder) / CLIPS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: is {folder} a folder written by `python -m main.analysis "
                                "generate` (or `reconstruct`)?")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "sci_name"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        return list(reader)


def clips_from_folder(folder: PathLike, name: Optional[str] = None, require_all: bool = True) -> ClipSet:
    """The clips listed in `<folder>/clips.csv`; a listed file that is missing is an error unless
    `require_all` is False (then it is left out)."""
    folder = Path(folder)
    rows = read_clip_rows(folder)
    exists = [(folder / r["file"]).is_file() for r in rows]
    present = [r for r, ok in zip(rows, exists) if ok]
    if require_all and len(present) != len(rows):
        missing = [r["file"] for r, ok in zip(rows, exists) if not ok]
        raise FileNotFoundError(f"{folder}: {len(missing)} of {len(rows)} clips missing (e.g. {missing[:3]}); "
                                "finish the run (it resumes) or pass require_all=False")
    if not present:
        raise ValueError(f"{folder} holds none of the clips listed in {CLIPS_FILE}")
    return ClipSet(name or folder.name, [str(folder / r["file"]) for r in present],
                   [r["sci_name"] for r in present], [r.get("label") or r["sci_name"] for r in present])


def load_audio(path: PathLike, sample_rate: Optional[int] = None, mono: bool = True) -> tuple[np.ndarray, int]:
    """Read a file as float32 [samples] (mono: channel mean) or [samples, channels], resampled when asked."""
    from main.data.audio import read_audio

    data, rate = read_audio(path)
    if data.shape[0] == 0:
        raise ValueError(f"{path}: no audio samples")
    if mono:
        data = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if sample_rate is not None and rate != sample_rate:
        import torch
        import torchaudio

        tensor = torch.from_numpy(np.ascontiguousarray(data.T if data.ndim == 2 else data))
        data = torchaudio.functional.resample(tensor, rate, sample_rate).numpy()
        data = data.T if data.ndim == 2 else data
        rate = sample_rate
    return np.ascontiguousarray(data, dtype=np.float32), int(rate)
