"""The manifest's audio dataset and the collate function shared with the streamed dataset.

Reproducibility: a training crop is drawn from an RNG seeded with (seed, epoch, index); the training
samplers (`main.data.samplers`) pass the epoch with each index, so crops do not depend on the number of
workers or on worker processes seeing `set_epoch`.

A file that cannot be read at training time (deleted, truncated, ...) yields None from the dataset;
`collate_audio` drops it and counts it in the batch's ``skipped`` entry, so an epoch never crashes on
one bad file. A batch may therefore hold fewer than ``batch_size`` clips (even 0: shape [0, C, L]).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from torch.utils.data import Dataset

from main.files import PathLike

from .audio import AudioReadError, normalize_loudness, read_audio
from .cropping import CropReader
from .manifest import read_manifest

log = logging.getLogger(__name__)
Item = Optional[dict[str, Any]]


class AudioDataset(CropReader, Dataset):
    """Fixed-length clips (and labels) from the rows of a manifest split; None for a file that fails to read.

    Only the stretch of the file under the crop is decoded (plus resampler context and codec pre-roll),
    then resampled to `sample_rate` with a cached torchaudio resampler per source rate (`CropReader`).
    Crops start on the grid where source and target samples coincide (every sample for 48 -> 32 kHz,
    10 ms for 44.1 kHz), so a crop equals the same stretch of the fully resampled file. Channels: mono is
    duplicated; files with more channels than `channels` keep the first ones (the recorder's stereo pair;
    a downmix would blur the image); `channels=1` downmixes. Clips shorter than the crop are zero-padded
    at the end. Training crops (`random_crop`) are seeded by (seed, epoch, index); evaluation crops start
    at 0.
    """

    def __init__(
        self,
        manifest: PathLike,
        split: Optional[str] = None,
        sample_rate: int = 32000,
        crop_length: int = 2**18,
        channels: int = 2,
        random_crop: bool = False,
        with_text: bool = False,
        seed: int = 0,
        loudness_normalize: bool = False,
        target_dbfs: float = -20.0,
        loudness_max_peak: Optional[float] = 1.0,
    ) -> None:
        self._init_crop(sample_rate, crop_length, channels)
        self.manifest = Path(manifest)
        self.split = split
        rows = read_manifest(self.manifest, split)
        # Plain lists of the few columns needed (not row dicts): cheaper in every worker process.
        self.paths: list[str] = [str(row["path"]) for row in rows]
        self.labels: list[str] = [str(row["label"]) for row in rows]
        self.sci_names: list[str] = [str(row["sci_name"]) for row in rows]
        self.random_crop = random_crop
        self.with_text = with_text
        self.seed = int(seed)
        self.loudness_normalize = loudness_normalize
        self.target_dbfs = float(target_dbfs)
        self.loudness_max_peak = loudness_max_peak
        self.epoch = 0
        self._warned: set[str] = set()

    def __len__(self) -> int:
        """Number of rows in the split."""
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for crops of plain integer indices (samplers pass it with each index instead)."""
        self.epoch = int(epoch)

    def __getitem__(self, item: Union[int, tuple[int, int]]) -> Item:
        """{'audio': [channels, crop_length], 'text': label (with_text)} or None when the file fails to read."""
        if isinstance(item, (tuple, list)):
            index, epoch = int(item[0]), int(item[1])
        else:
            index, epoch = int(item), self.epoch
        path = self.paths[index]
        try:
            audio = self._load_crop(path, index, epoch)
        except (AudioReadError, sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
            if path not in self._warned:
                self._warned.add(path)
                log.warning("skipping %s: %s", path, error)
            return None
        if not bool(torch.isfinite(audio).all()):  # e.g. a float WAV holding NaN/inf: never reaches a batch
            if path not in self._warned:
                self._warned.add(path)
                log.warning("skipping %s: it decodes to non-finite samples (NaN/inf)", path)
            return None
        if self.loudness_normalize:
            audio = normalize_loudness(audio, self.target_dbfs, self.loudness_max_peak)
        out: dict[str, Any] = {"audio": audio}
        if self.with_text:
            out["text"] = self.labels[index]
        return out

    def crop_start(self, total: int, index: int, epoch: int) -> int:
        """Crop start (target-rate samples) for a clip of `total` samples: seeded random for training, else 0."""
        if not self.random_crop or total <= self.crop_length:
            return 0
        rng = np.random.default_rng([self.seed, epoch, index])
        return int(rng.integers(0, total - self.crop_length + 1))

    def _load_crop(self, path: str, index: int, epoch: int) -> Tensor:
        """Read only the needed stretch of the file, resample it and return [channels, crop_length]."""

        def whole_file(error: BaseException) -> tuple[np.ndarray, int]:
            if not os.path.isfile(path):
                raise AudioReadError("file not found") from error
            return read_audio(path)  # torchaudio fallback, whole file

        return self._read_crop(path, lambda total: self.crop_start(total, index, epoch), whole_file,
                               rewind_on_empty=True)


def collate_audio(
    batch: Sequence[Item], channels: int = 2, crop_length: int = 0, with_text: bool = False
) -> dict[str, Any]:
    """Stack the items that loaded: {'audio': [B, C, L], 'text': [B] (if any), 'skipped': tensor(#None)}."""
    items = [item for item in batch if item is not None]
    skipped = len(batch) - len(items)
    if items:
        audio = torch.stack([item["audio"] for item in items])
    else:
        audio = torch.zeros(0, channels, crop_length)
    out: dict[str, Any] = {"audio": audio, "skipped": torch.tensor(skipped)}
    if with_text or any("text" in item for item in items):
        out["text"] = [str(item.get("text", "")) for item in items]
    return out
