"""`StreamingAudioDataset`: fixed-length clips streamed from one split of a LitData data set, and its loader.

LitData splits the chunks over DDP ranks and DataLoader workers (``drop_last`` in DDP, so every rank gets
the same number of clips), shuffles chunks and clips per epoch with `seed`, streams remote chunks
(``s3://...``) through a local cache, and `StreamingAudioLoader.state_dict()` records how far an epoch got,
so a run resumed from a mid-epoch checkpoint (Lightning saves and restores that state) goes on with the
next batch. Crops are seeded by (seed, epoch, key) only, so a resumed run, or another number of ranks or
workers, sees the same crop of a clip in the same epoch.
"""

from __future__ import annotations

import io
import json
import logging
import zlib
from typing import Any, Optional

import numpy as np
import soundfile as sf
from litdata import StreamingDataLoader, StreamingDataset
from torch import Tensor

from main.files import PathLike

from ..audio import AudioReadError
from ..captions import CaptionConfig, training_caption
from ..cropping import CropReader, seeded_crop_start
from ..dataset import crop_problem, read_error_reason, skipped_item
from .format import check_split, decode_with_fallback, split_location

log = logging.getLogger(__name__)


class StreamingAudioDataset(CropReader, StreamingDataset):
    """Fixed-length clips (and labels) streamed from one split of a streamed data set; a `skipped_item` for a bad one.

    Same items as `AudioDataset`: ``{"audio": [channels, crop_length], "text": label}`` (text with
    `with_text`; ``"key"`` too with `with_key`), resampled to `sample_rate`, channels converted (mono is
    duplicated), zero-padded at the end, randomly cropped when `random_crop`. `root` is a local folder or
    an object-store URL; remote chunks are cached in `cache_dir` (LitData's default when None). With `captions`
    enabled, 'text' is drawn from the stored row's metadata by (seed, epoch, key) (`main.data.captions`).
    """

    def __init__(
        self,
        root: PathLike,
        split: str = "train",
        sample_rate: int = 32000,
        crop_length: int = 2**18,
        channels: int = 2,
        random_crop: bool = False,
        with_text: bool = False,
        seed: int = 0,
        shuffle: bool = False,
        with_key: bool = False,
        cache_dir: Optional[str] = None,
        max_cache_size: Optional[str] = None,
        drop_last: Optional[bool] = None,
        silence_dbfs: Optional[float] = -90.0,
        captions: Optional[CaptionConfig] = None,
    ) -> None:
        self._init_crop(sample_rate, crop_length, channels)
        check_split(root, split)
        super().__init__(split_location(root, split), cache_dir=cache_dir, shuffle=shuffle, seed=int(seed),
                         drop_last=drop_last, max_cache_size=max_cache_size)
        self.root, self.split = str(root), split
        self.random_crop = random_crop
        self.with_text = with_text
        self.with_key = with_key
        self.captions = captions if captions is not None and captions.enabled else None
        self.silence_dbfs = None if silence_dbfs is None else float(silence_dbfs)

    @property
    def num_clips(self) -> int:
        """Clips in the split (all ranks together, one pass)."""
        return sum(int(end) - int(start) for start, end in self.region_of_interest)

    def __getitem__(self, index: Any) -> dict[str, Any]:
        """The stored sample at `index` (what LitData's iterator asks for), decoded and cropped."""
        if isinstance(index, slice):
            raise TypeError("StreamingAudioDataset does not take slices; index one clip at a time")
        return self.make_item(super().__getitem__(index))

    def make_item(self, raw: dict[str, Any]) -> dict[str, Any]:
        """Crop one stored sample; a `skipped_item` (with a warning) when it fails to decode, is non-finite or silent."""
        key = str(raw["key"])
        try:
            audio = self._load_crop(raw, key)
        except (AudioReadError, sf.LibsndfileError, RuntimeError, OSError, ValueError, KeyError, TypeError) as error:
            return self._skip(key, read_error_reason(error), error)
        problem = crop_problem(audio, self.silence_dbfs)
        if problem is not None:
            return self._skip(key, *problem)
        out: dict[str, Any] = {"audio": audio}
        if self.with_text and self.captions is not None:
            clip = zlib.crc32(key.encode("utf-8"))
            out["text"] = training_caption(str(raw["label"]), self.meta(raw), self.captions, self.seed,
                                           int(self.current_epoch), clip)
        elif self.with_text:
            out["text"] = str(raw["label"])
        if self.with_key:
            out["key"] = key
        return out

    def _skip(self, key: str, reason: str, detail: Any) -> dict[str, Any]:
        """Warn and return the `skipped_item` (no dataset index: streamed clips are named by key)."""
        log.warning("skipping %s in %s (%s): %s", key, self.root, reason, detail)
        return skipped_item(None, reason)

    def crop_start(self, total: int, key: str, epoch: int) -> int:
        """Crop start (target-rate samples): seeded by (seed, epoch, key) when training, else 0."""
        clip = zlib.crc32(key.encode("utf-8"))
        return seeded_crop_start(total, self.crop_length, self.random_crop, self.seed, epoch, clip)

    def _load_crop(self, raw: dict[str, Any], key: str) -> Tensor:
        """[channels, crop_length] from int16 PCM (a slice) or original bytes (only the crop's stretch decoded)."""
        epoch = int(self.current_epoch)
        audio = raw["audio"]
        start = lambda total: self.crop_start(total, key, epoch)  # noqa: E731
        if isinstance(audio, np.ndarray):
            return self._crop_array(audio, int(raw["sample_rate"]), start)
        ext = str(raw["ext"])
        return self._read_crop(io.BytesIO(audio), start, lambda error: decode_with_fallback(audio, ext))

    @staticmethod
    def meta(raw: dict[str, Any]) -> dict[str, Any]:
        """The manifest row (and audio info) stored with a sample."""
        return json.loads(raw["meta"])


class StreamingAudioLoader(StreamingDataLoader):
    """LitData's StreamingDataLoader with torch's ``drop_last`` kept (LitData uses the flag for its dataset only).

    With ``drop_last=True`` each worker's last partial batch is dropped, as a DataLoader does, and ``len()``
    counts full batches. Workers are not persistent: each epoch's workers start from the loader's epoch
    and state (what exact resume relies on).
    """

    def __init__(self, dataset: StreamingAudioDataset, *args: Any, drop_last: bool = False, **kwargs: Any) -> None:
        if not isinstance(dataset, StreamingAudioDataset):
            raise TypeError(f"StreamingAudioLoader needs a StreamingAudioDataset, got {type(dataset).__name__}")
        kwargs.pop("persistent_workers", None)
        super().__init__(dataset, *args, drop_last=drop_last, **kwargs)
        object.__setattr__(self, "drop_last", bool(drop_last))  # DataLoader forbids setting it after __init__
