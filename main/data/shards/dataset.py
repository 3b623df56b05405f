"""`ShardedAudioDataset`: fixed-length clips streamed from the tar shards of one split, and its DataLoader.

The shards of an epoch are dealt to the (rank, worker) slots by `main.data.shards.planning`. A shard
always yields the number of clips its index entry gives: a member that fails to decode, a missing shard
or a truncated tar yields None for each missing clip, which `collate_audio` skips and counts; so a bad
shard cannot unbalance the ranks either.

Epochs reach worker processes through a shared-memory counter: `ShardedDataLoader` (used by
`BirdSoundDataModule`) sets it from the trainer's epoch at each ``iter()``; with a plain DataLoader call
`ShardedAudioDataset.set_epoch` before each epoch, otherwise every pass after the first counts one epoch
further. Crops are seeded by (seed, epoch, pass over the shard, key), so they do not depend on the number
of ranks or workers.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tarfile
import zlib
from typing import Any, Callable, Iterator, Optional

import numpy as np
import soundfile as sf
import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from main.files import PathLike

from ..audio import AudioReadError, normalize_loudness
from ..cropping import CropReader
from .format import audio_member, decode_with_fallback, iter_tar_samples, split_shards
from .planning import UNEVEN_MODES, assign_shards, worker_quotas

log = logging.getLogger(__name__)
Item = Optional[dict[str, Any]]


class ShardedAudioDataset(CropReader, IterableDataset):
    """Fixed-length clips (and labels) streamed from the tar shards of one split; None for a bad sample.

    Same items as `AudioDataset`: ``{"audio": [channels, crop_length], "text": label}`` (text with
    `with_text`; ``"key"`` too with `with_key`), resampled to `sample_rate`, channels converted (mono is
    duplicated), zero-padded at the end, randomly cropped when `random_crop` (decoded by `CropReader`,
    as `AudioDataset`). `shuffle` reorders the shards every epoch; `shuffle_buffer` > 0 also mixes
    samples through a seeded in-memory buffer.
    `rank` / `world_size` default to torch.distributed (then $RANK / $WORLD_SIZE, then 0 / 1).
    """

    def __init__(
        self,
        shards: PathLike,
        split: str = "train",
        sample_rate: int = 32000,
        crop_length: int = 2**18,
        channels: int = 2,
        random_crop: bool = False,
        with_text: bool = False,
        seed: int = 0,
        shuffle: bool = False,
        shuffle_buffer: int = 0,
        loudness_normalize: bool = False,
        target_dbfs: float = -20.0,
        loudness_max_peak: Optional[float] = 1.0,
        uneven: str = "pad",
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        with_key: bool = False,
    ) -> None:
        self._init_crop(sample_rate, crop_length, channels)
        if shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {shuffle_buffer}")
        if uneven not in UNEVEN_MODES:
            raise ValueError(f"uneven must be one of {UNEVEN_MODES}, got {uneven!r}")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        if world_size is not None and not 0 <= int(rank) < int(world_size):  # type: ignore[arg-type]
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
        self.split = split
        entries = split_shards(shards, split)
        self.shard_paths: list[str] = [str(path) for path, _ in entries]
        self.shard_counts: list[int] = [clips for _, clips in entries]
        self.random_crop = random_crop
        self.with_text = with_text
        self.with_key = with_key
        self.seed = int(seed)
        self.shuffle = shuffle
        self.shuffle_buffer = int(shuffle_buffer)
        self.loudness_normalize = loudness_normalize
        self.target_dbfs = float(target_dbfs)
        self.loudness_max_peak = loudness_max_peak
        self.uneven = uneven
        self.rank = rank
        self.world_size = world_size
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()  # seen by (persistent) workers
        self._next_epoch = 0
        self._pass_started = False
        self._frozen_rank: Optional[tuple[int, int]] = None

    @property
    def num_clips(self) -> int:
        """Clips in the split (all ranks together, one pass)."""
        return sum(self.shard_counts)

    @property
    def epoch(self) -> int:
        """The epoch of the current (or next) pass."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Use `epoch` for the next pass (shard order and crops); visible to running worker processes."""
        self._next_epoch = int(epoch)
        self._epoch.fill_(int(epoch))

    def begin_pass(self, epoch: Optional[int] = None) -> int:
        """Main process, before iter(): fix the pass's epoch (given, else set_epoch's, else last + 1) and rank."""
        epoch = self._next_epoch if epoch is None else int(epoch)
        self._next_epoch = epoch + 1
        self._epoch.fill_(epoch)
        self._pass_started = True
        self._frozen_rank = self.rank_and_world()
        return epoch

    def rank_and_world(self) -> tuple[int, int]:
        """(rank, world_size): as given, else torch.distributed, else frozen by begin_pass, else $RANK/$WORLD_SIZE."""
        if self.rank is not None and self.world_size is not None:
            return int(self.rank), int(self.world_size)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        if self._frozen_rank is not None:
            return self._frozen_rank
        if os.environ.get("RANK", "").isdigit() and os.environ.get("WORLD_SIZE", "").isdigit():
            return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        return 0, 1

    def plan(self, world_size: int, num_workers: int, epoch: int) -> tuple[list[list[list[int]]], list[int]]:
        """Shard indices per [rank][worker] and the samples each worker index yields on every rank."""
        assignment = assign_shards(self.shard_counts, world_size, num_workers, epoch, self.seed, self.shuffle)
        return assignment, worker_quotas(self.shard_counts, assignment, self.uneven)

    def samples_per_rank(self, world_size: int = 1, num_workers: int = 1, epoch: int = 0) -> int:
        """Samples one rank yields in `epoch` (the same on every rank)."""
        return sum(self.plan(world_size, num_workers, epoch)[1])

    def __iter__(self) -> Iterator[Item]:
        """The samples of this process's (rank, worker) slot for the current epoch."""
        info = get_worker_info()
        if info is None:
            if not self._pass_started:
                self.begin_pass()
            self._pass_started = False
            worker, num_workers = 0, 1
        else:
            worker, num_workers = info.id, info.num_workers
        rank, world_size = self.rank_and_world()
        return self.iter_slot(rank, world_size, worker, num_workers, self.epoch)

    def iter_slot(self, rank: int, world_size: int, worker: int, num_workers: int, epoch: int) -> Iterator[Item]:
        """The samples of one (rank, worker) slot in `epoch`, shuffled through the buffer when enabled."""
        stream = self._slot_stream(rank, world_size, worker, num_workers, epoch)
        if self.shuffle_buffer > 1:
            rng = np.random.default_rng([self.seed, epoch, rank, worker, 1])
            stream = _buffer_shuffle(stream, self.shuffle_buffer, rng)
        return stream

    def _slot_stream(self, rank: int, world_size: int, worker: int, num_workers: int, epoch: int) -> Iterator[Item]:
        """Read the slot's shards (again, with new crops, while short of the quota) until the quota is met."""
        assignment, quotas = self.plan(world_size, num_workers, epoch)
        quota = quotas[worker]
        own = assignment[rank][worker]
        if quota <= 0:
            return
        if sum(self.shard_counts[s] for s in own) == 0:
            # Fewer (non-empty) shards than slots: repeat other slots' shards, as DistributedSampler pads.
            flat = [s for per_rank in assignment for per_worker in per_rank for s in per_worker
                    if self.shard_counts[s] > 0]
            shift = (rank * num_workers + worker) % len(flat)
            own = flat[shift:] + flat[:shift]
            log.warning("split %r: rank %d worker %d has no shard (%d shards for %d x %d slots); repeating others",
                        self.split, rank, worker, len(self.shard_counts), world_size, num_workers)
        produced, repeat = 0, 0
        while True:
            for shard in own:
                for item in self._read_shard(shard, epoch, repeat):
                    yield item
                    produced += 1
                    if produced >= quota:
                        return
            repeat += 1

    def _read_shard(self, shard: int, epoch: int, repeat: int) -> Iterator[Item]:
        """Exactly the index's clip count of items from one shard; None for each clip that fails."""
        path, expected = self.shard_paths[shard], self.shard_counts[shard]
        produced = 0
        try:
            for key, members in iter_tar_samples(path):
                if produced >= expected:
                    log.warning("%s holds more samples than its index entry (%d); ignoring the rest", path, expected)
                    break
                yield self._make_item(key, members, epoch, repeat, path)
                produced += 1
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
            log.warning("%s: unreadable after %d of %d samples (%s)", path, produced, expected, error)
        for _ in range(expected - produced):
            yield None

    def _make_item(self, key: str, members: dict[str, bytes], epoch: int, repeat: int, shard: str) -> Item:
        """Decode one sample; None (with a warning) when it fails."""
        try:
            ext = audio_member(members)
            label = None
            if self.with_text:
                if "json" not in members:
                    raise ValueError("no JSON member (needed for the label)")
                label = json.loads(members["json"].decode("utf-8"))["label"]
            audio = self._load_crop(members[ext], ext, key, epoch, repeat)
        except (AudioReadError, sf.LibsndfileError, RuntimeError, OSError, ValueError, KeyError, TypeError) as error:
            log.warning("skipping %s in %s: %s", key, shard, error)
            return None
        if self.loudness_normalize:
            audio = normalize_loudness(audio, self.target_dbfs, self.loudness_max_peak)
        out: dict[str, Any] = {"audio": audio}
        if self.with_text:
            out["text"] = str(label)
        if self.with_key:
            out["key"] = key
        return out

    # ------------------------------------------------------------------ decoding (as AudioDataset)

    def crop_start(self, total: int, key: str, epoch: int, repeat: int) -> int:
        """Crop start (target-rate samples): seeded by (seed, epoch, repeat, key) when training, else 0."""
        if not self.random_crop or total <= self.crop_length:
            return 0
        rng = np.random.default_rng([self.seed, epoch, repeat, zlib.crc32(key.encode("utf-8"))])
        return int(rng.integers(0, total - self.crop_length + 1))

    def _load_crop(self, payload: bytes, ext: str, key: str, epoch: int, repeat: int) -> Tensor:
        """Decode only the crop's stretch (plus resampler context / codec pre-roll) -> [channels, crop_length]."""
        return self._read_crop(io.BytesIO(payload), lambda total: self.crop_start(total, key, epoch, repeat),
                               lambda error: decode_with_fallback(payload, ext))


def _buffer_shuffle(stream: Iterator[Item], size: int, rng: np.random.Generator) -> Iterator[Item]:
    """Mix a stream through a buffer of `size` items (each output picked at random from the buffer)."""
    buffer: list[Item] = []
    for item in stream:
        if len(buffer) < size:
            buffer.append(item)
            continue
        index = int(rng.integers(len(buffer)))
        buffer[index], item = item, buffer[index]
        yield item
    for index in rng.permutation(len(buffer)).tolist():
        yield buffer[index]


class ShardedDataLoader(DataLoader):
    """A DataLoader that starts each pass of its ShardedAudioDataset at the right epoch.

    `epoch_fn` (e.g. the trainer's current epoch) gives the epoch at each ``iter()``; when it returns
    None the dataset's own counter is used (set_epoch, else one more than the previous pass).
    """

    def __init__(self, dataset: ShardedAudioDataset, *args: Any,
                 epoch_fn: Optional[Callable[[], Optional[int]]] = None, **kwargs: Any) -> None:
        if not isinstance(dataset, ShardedAudioDataset):
            raise TypeError(f"ShardedDataLoader needs a ShardedAudioDataset, got {type(dataset).__name__}")
        super().__init__(dataset, *args, **kwargs)
        self.epoch_fn = epoch_fn

    def __iter__(self) -> Any:
        """Fix the dataset's epoch (visible to the workers), then iterate as a DataLoader."""
        epoch = self.epoch_fn() if self.epoch_fn is not None else None
        self.dataset.begin_pass(epoch)  # type: ignore[attr-defined]
        return super().__iter__()
