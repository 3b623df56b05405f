"""The manifest's audio dataset and the collate function shared with the streamed dataset.

Reproducibility: a training crop is drawn from an RNG seeded with (seed, epoch, index); the training
samplers (`main.data.samplers`) pass the epoch with each index, so crops do not depend on the number of
workers or on worker processes seeing `set_epoch`.

A file that cannot be used at training time yields a `skipped_item` from the dataset instead of a clip:
``unreadable`` (deleted, truncated, undecodable), ``non_finite`` (decodes to NaN/inf) or ``silent`` (the crop's
RMS is at or below `silence_dbfs`, e.g. an all-zero file). `collate_audio` drops it and counts it in the
batch's ``skipped`` entry (and ``skipped_by_reason``), so an epoch never crashes on one bad file and one bad
file never costs a whole batch. A batch may therefore hold fewer than ``batch_size`` clips (even 0: shape
[0, C, L]). Every batch also lists the dataset indices it was built from (``items``, skipped ones included).
"""

from __future__ import annotations

import json
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

from .audio import AudioReadError, read_audio
from .captions import CaptionConfig, caption_record, training_caption
from .cropping import CropReader, seeded_crop_start
from .manifest import read_manifest

log = logging.getLogger(__name__)
Item = Optional[dict[str, Any]]
SKIP_REASONS = ("unreadable", "non_finite", "silent")


def skipped_item(index: Optional[int], reason: str) -> dict[str, Any]:
    """What a dataset returns instead of a clip it cannot use: why (one of SKIP_REASONS) and the index (if any)."""
    if reason not in SKIP_REASONS:
        raise ValueError(f"skip reason must be one of {SKIP_REASONS}, got {reason!r}")
    return {"skip": reason} if index is None else {"skip": reason, "index": int(index)}


def _int_or_none(value: Any) -> Optional[int]:
    """A manifest cell as an int (None when empty)."""
    return None if value in (None, "") else int(value)


def is_silent(audio: Tensor, silence_dbfs: Optional[float]) -> bool:
    """Whether `audio`'s RMS is at or below `silence_dbfs` (dBFS; None: nothing counts as silent)."""
    if silence_dbfs is None:
        return False
    rms = float(audio.double().pow(2).mean().sqrt()) if audio.numel() else 0.0
    return rms <= 10.0 ** (float(silence_dbfs) / 20.0)


def read_error_reason(error: BaseException) -> str:
    """The skip reason of an error raised while reading a crop: non_finite or unreadable."""
    return "non_finite" if isinstance(error, AudioReadError) and "non-finite" in str(error) else "unreadable"


def crop_problem(audio: Tensor, silence_dbfs: Optional[float]) -> Optional[tuple[str, str]]:
    """(skip reason, detail) when a decoded crop must not reach a batch (NaN/inf, or silent), else None."""
    if not bool(torch.isfinite(audio).all()):  # e.g. a float WAV holding NaN/inf
        return "non_finite", "it decodes to non-finite samples (NaN/inf)"
    if is_silent(audio, silence_dbfs):
        return "silent", f"the crop's RMS is at or below {silence_dbfs} dBFS"
    return None


class AudioDataset(CropReader, Dataset):
    """Fixed-length clips (and labels) from the rows of a manifest split; None for a file that fails to read.

    Only the stretch of the file under the crop is decoded (plus resampler context and codec pre-roll),
    then resampled to `sample_rate` with a cached torchaudio resampler per source rate (`CropReader`).
    Crops start on the grid where source and target samples coincide (every sample for 48 -> 32 kHz,
    10 ms for 44.1 kHz), so a crop equals the same stretch of the fully resampled file. Channels: mono is
    duplicated; files with more channels than `channels` keep the first ones (the recorder's stereo pair;
    a downmix would blur the image); `channels=1` downmixes. Clips shorter than the crop are zero-padded
    at the end. Training crops (`random_crop`) are seeded by (seed, epoch, index); evaluation crops start
    at 0. A crop whose RMS is at or below `silence_dbfs` (None: keep every crop) is skipped as silent. With
    `captions` enabled, 'text' is a caption drawn from the row's metadata by (seed, epoch, index)
    (`main.data.captions`) instead of always the row's label.
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
        silence_dbfs: Optional[float] = -90.0,
        captions: Optional[CaptionConfig] = None,
    ) -> None:
        self._init_crop(sample_rate, crop_length, channels)
        self.manifest = Path(manifest)
        self.split = split
        rows = read_manifest(self.manifest, split)
        # Plain lists of the few columns needed (not row dicts): cheaper in every worker process.
        self.paths: list[str] = [str(row["path"]) for row in rows]
        self.labels: list[str] = [str(row["label"]) for row in rows]
        self.sci_names: list[str] = [str(row["sci_name"]) for row in rows]
        self.frames: list[Optional[int]] = [_int_or_none(row.get("frames")) for row in rows]
        self.captions = captions if captions is not None and captions.enabled and with_text else None
        # the metadata captions are drawn from, one compact JSON string per row (only with captions)
        self.records: list[str] = ([json.dumps(caption_record(row), ensure_ascii=False) for row in rows]
                                   if self.captions is not None else [])
        self.random_crop = random_crop
        self.with_text = with_text
        self.seed = int(seed)
        self.silence_dbfs = None if silence_dbfs is None else float(silence_dbfs)
        self.epoch = 0
        self._warned: set[str] = set()

    def __len__(self) -> int:
        """Number of rows in the split."""
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for crops of plain integer indices (samplers pass it with each index instead)."""
        self.epoch = int(epoch)

    def _skip(self, index: int, reason: str, detail: Any) -> dict[str, Any]:
        """Warn once per file and return the `skipped_item`."""
        path = self.paths[index]
        if path not in self._warned:
            self._warned.add(path)
            log.warning("skipping %s (%s): %s", path, reason, detail)
        return skipped_item(index, reason)

    def __getitem__(self, item: Union[int, tuple[int, int]]) -> dict[str, Any]:
        """{'audio': [channels, crop_length], 'text': label (with_text), 'index'}, or a `skipped_item`."""
        if isinstance(item, (tuple, list)):
            index, epoch = int(item[0]), int(item[1])
        else:
            index, epoch = int(item), self.epoch
        try:
            audio = self._load_crop(self.paths[index], index, epoch)
        except (AudioReadError, sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
            return self._skip(index, read_error_reason(error), error)
        problem = crop_problem(audio, self.silence_dbfs)
        if problem is not None:
            return self._skip(index, *problem)
        out: dict[str, Any] = {"audio": audio, "index": index}
        if self.with_text:
            out["text"] = self.text(index, epoch)
        return out

    def text(self, index: int, epoch: int) -> str:
        """The label of row `index`, or with `captions` its caption in `epoch`."""
        if self.captions is None:
            return self.labels[index]
        record = json.loads(self.records[index])
        return training_caption(self.labels[index], record, self.captions, self.seed, epoch, index)

    def crop_start(self, total: int, index: int, epoch: int) -> int:
        """Crop start (target-rate samples) for a clip of `total` samples: seeded random for training, else 0."""
        return seeded_crop_start(total, self.crop_length, self.random_crop, self.seed, epoch, index)

    def _load_crop(self, path: str, index: int, epoch: int) -> Tensor:
        """Read only the needed stretch of the file, resample it and return [channels, crop_length]."""

        def whole_file(error: BaseException) -> tuple[np.ndarray, int]:
            if not os.path.isfile(path):
                raise AudioReadError("file not found") from error
            return read_audio(path)  # torchaudio fallback, whole file

        return self._read_crop(path, lambda total: self.crop_start(total, index, epoch), whole_file,
                               rewind_on_empty=True, expected_frames=self.frames[index])


def collate_audio(
    batch: Sequence[Item], channels: int = 2, crop_length: int = 0, with_text: bool = False
) -> dict[str, Any]:
    """Stack the items that loaded: {'audio': [B, C, L], 'text': [B] (if any), 'skipped': tensor(#skipped),
    'skipped_by_reason': {reason: n}, 'items': dataset indices of the whole batch (when every item has one)}."""
    items = [item for item in batch if item is not None and "skip" not in item]
    skipped = len(batch) - len(items)
    reasons: dict[str, int] = {}
    for item in batch:
        if item is None or "skip" in item:
            reason = "unreadable" if item is None else str(item["skip"])
            reasons[reason] = reasons.get(reason, 0) + 1
    if items:
        audio = torch.stack([item["audio"] for item in items])
    else:
        audio = torch.zeros(0, channels, crop_length)
    out: dict[str, Any] = {"audio": audio, "skipped": torch.tensor(skipped), "skipped_by_reason": reasons}
    if batch and all(item is not None and "index" in item for item in batch):
        out["items"] = torch.tensor([int(item["index"]) for item in batch])
    if with_text or any("text" in item for item in items):
        out["text"] = [str(item.get("text", "")) for item in items]
    return out
