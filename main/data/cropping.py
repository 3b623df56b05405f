"""Fixed-length crops at a target rate, decoding only the stretch under the crop; shared by the datasets.

`CropReader` is mixed into `main.data.dataset.AudioDataset` and `main.data.streaming.StreamingAudioDataset`:
each dataset opens its source (a path, stored bytes or int16 samples) and seeds its own crop start; the reader reads the
stretch under the crop (plus resampler context and codec pre-roll), resamples it with a cached torchaudio
resampler per source rate, converts channels and zero-pads to the crop length.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch import Tensor

from .audio import AudioReadError, to_channels

_MARGIN_SOURCE_SAMPLES = 64  # read this much context either side of a crop before resampling
# libsndfile's MP3 and Vorbis seeks need decoder pre-roll to be sample-exact (measured: 8 MP3 frames suffice).
_PREROLL_SOURCE_SAMPLES = {"MP3": 9216, "OGG": 9216}
_PCM16_SCALE = 32768.0  # int16 -> float as libsndfile reads 16-bit files

CropStart = Callable[[int], int]  # total target-rate samples -> crop start (target-rate samples)
Fallback = Callable[[BaseException], tuple[np.ndarray, int]]  # libsndfile's error -> ([frames, C], rate)


def seeded_crop_start(total: int, crop_length: int, random_crop: bool, seed: int, epoch: int, clip: int) -> int:
    """Crop start (target-rate samples) in a clip of `total` samples: seeded by (seed, epoch, clip) when
    `random_crop`, else 0 (also when the clip is not longer than the crop)."""
    if not random_crop or total <= crop_length:
        return 0
    rng = np.random.default_rng([int(seed), int(epoch), int(clip)])
    return int(rng.integers(0, total - crop_length + 1))


class CropReader:
    """Mixin: [channels, crop_length] crops at `sample_rate` from libsndfile sources or decoded arrays.

    The class using it calls `_init_crop` in its ``__init__`` and provides the crop start of each read.
    Crops start on the grid where source and target samples coincide (every sample for
    48 -> 32 kHz, 10 ms for 44.1 kHz), so a crop equals the same stretch of the fully resampled file.
    """

    sample_rate: int
    crop_length: int
    channels: int
    _resamplers: dict[int, torchaudio.transforms.Resample]

    def _init_crop(self, sample_rate: int, crop_length: int, channels: int) -> None:
        """Check and set the target rate, crop length and channels (ValueError naming a bad one)."""
        if crop_length <= 0:
            raise ValueError(f"crop_length must be > 0, got {crop_length}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {sample_rate}")
        if channels <= 0:
            raise ValueError(f"channels must be > 0, got {channels}")
        self.sample_rate = int(sample_rate)
        self.crop_length = int(crop_length)
        self.channels = int(channels)
        self._resamplers = {}

    def _units(self, rate: int) -> tuple[int, int]:
        """Source and target sample counts of the shortest stretch where both rates align on whole samples."""
        g = math.gcd(rate, self.sample_rate)
        return rate // g, self.sample_rate // g

    def _resampler(self, source_rate: int) -> torchaudio.transforms.Resample:
        """A cached resampler from `source_rate` to the target rate."""
        if source_rate not in self._resamplers:
            self._resamplers[source_rate] = torchaudio.transforms.Resample(source_rate, self.sample_rate)
        return self._resamplers[source_rate]

    def _read_crop(
        self, source: Union[str, Any], crop_start: CropStart, fallback: Fallback, rewind_on_empty: bool = False,
        expected_frames: Optional[int] = None,
    ) -> Tensor:
        """Read only the crop's stretch of `source` (a path or file object) -> [channels, crop_length].

        When libsndfile cannot open `source`, `fallback(error)` decodes it whole (or raises). With
        `rewind_on_empty`, a read past a header that over-estimates the length (some MP3s) starts again at 0.
        `expected_frames` (the length recorded when the data set was prepared) catches a file truncated since:
        libsndfile reads a cut WAV as a shorter file. MP3 and Ogg lengths are header estimates and not compared.
        """
        try:
            handle = sf.SoundFile(source)
        except (sf.LibsndfileError, RuntimeError, TypeError) as error:
            data, rate = fallback(error)
            return self._crop_array(data, rate, crop_start)
        with handle:
            rate, total_source = int(handle.samplerate), int(handle.frames)
            exact_length = str(handle.format) not in _PREROLL_SOURCE_SAMPLES  # MP3/Ogg: estimated from the header
            if expected_frames and exact_length and total_source != expected_frames:
                raise AudioReadError(f"truncated or changed since preparation: {total_source} frames, the manifest "
                                     f"recorded {expected_frames}")
            unit_src, unit_tgt = self._units(rate)
            total = total_source * self.sample_rate // rate
            start = crop_start(total) // unit_tgt * unit_tgt
            src_start = start // unit_tgt * unit_src
            context = 0 if rate == self.sample_rate else _MARGIN_SOURCE_SAMPLES
            lead = max(context, _PREROLL_SOURCE_SAMPLES.get(str(handle.format), 0))
            lead = math.ceil(lead / unit_src) * unit_src  # keep the read start on the common rate grid
            read_start = max(src_start - lead, 0)
            count = (src_start - read_start) + math.ceil(self.crop_length * rate / self.sample_rate) + context
            if read_start:
                handle.seek(read_start)
            data = handle.read(count, dtype="float32", always_2d=True)
            if rewind_on_empty and data.shape[0] == 0 and read_start > 0:  # header over-estimated the length
                handle.seek(0)
                data = handle.read(count, dtype="float32", always_2d=True)
                src_start = read_start = 0
        skip = (src_start - read_start) // unit_src * unit_tgt
        return self._finish(data, rate, skip)

    def _crop_array(self, data: np.ndarray, rate: int, crop_start: CropStart) -> Tensor:
        """Crop a fully decoded [frames, channels] array (float, or int16 PCM: only the crop is converted)."""
        unit_src, unit_tgt = self._units(rate)
        total = data.shape[0] * self.sample_rate // rate
        src_start = crop_start(total) // unit_tgt * unit_src
        count = math.ceil(self.crop_length * rate / self.sample_rate)
        piece = data[src_start:src_start + count]
        if piece.dtype == np.int16:
            piece = piece.astype(np.float32) / _PCM16_SCALE
        return self._finish(piece, rate, 0)

    def _finish(self, data: np.ndarray, rate: int, skip: int) -> Tensor:
        """[frames, C] source samples -> finite [channels, crop_length] at the target rate (zero-padded)."""
        if data.shape[0] == 0:
            raise AudioReadError("no audio frames in the requested range")
        audio = torch.from_numpy(np.ascontiguousarray(data.T))
        if not bool(torch.isfinite(audio).all()):
            raise AudioReadError("non-finite samples")
        audio = to_channels(audio, self.channels)
        if rate != self.sample_rate:
            audio = self._resampler(rate)(audio)
        audio = audio[:, skip:skip + self.crop_length]
        if audio.shape[1] < self.crop_length:
            audio = torch.nn.functional.pad(audio, (0, self.crop_length - audio.shape[1]))
        return audio.contiguous()
