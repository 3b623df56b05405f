"""Audio dataset, collate function, epoch-seeded samplers and the Lightning data module.

Reproducibility: a training crop is drawn from an RNG seeded with (seed, epoch, index), and the
training samplers yield ``(index, epoch)`` pairs, so crops do not depend on the number of workers or on
worker processes seeing `set_epoch` (persistent workers keep a stale copy of the dataset). Without a
`set_epoch` call the samplers advance their epoch by one per pass.

A file that cannot be read at training time (deleted, truncated, ...) yields None from the dataset;
`collate_audio` drops it and counts it in the batch's ``skipped`` entry, so an epoch never crashes on
one bad file. A batch may therefore hold fewer than ``batch_size`` clips (even 0: shape [0, C, L]).

With ``shards`` (a folder written by ``python -m main.data.shard``), the train and validation loaders
stream `main.data.shards.ShardedAudioDataset` instead (split across DDP ranks and workers by shard, no
sampler); the test loader still reads the manifest.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import pytorch_lightning as pl
import soundfile as sf
import torch
import torchaudio
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from .audio import AudioReadError, read_audio
from .cropping import CropReader, to_channels
from .manifest import read_manifest
from .synthetic import dataset_params, default_cache_dir, generate_synthetic_dataset, params_hash

log = logging.getLogger(__name__)
PathLike = Union[str, os.PathLike]
Item = Optional[dict[str, Any]]


def load_recording(path: PathLike, sample_rate: int, channels: int) -> Tensor:
    """A whole recording as float32 [channels, samples] at `sample_rate`."""
    return recording_tensor(*read_audio(path), sample_rate, channels)


def recording_tensor(data: np.ndarray, rate: int, sample_rate: int, channels: int) -> Tensor:
    """Decoded audio [frames, channels] at `rate` as float32 [channels, samples] at `sample_rate`."""
    audio = torch.from_numpy(np.ascontiguousarray(data.T))
    if rate != sample_rate:
        audio = torchaudio.functional.resample(audio, rate, sample_rate)
    return to_channels(audio, channels)


def normalize_loudness(audio: Tensor, target_dbfs: float = -20.0, max_peak: Optional[float] = 1.0) -> Tensor:
    """Scale to `target_dbfs` RMS (over all channels), limited so the peak stays <= `max_peak` (None: no limit);
    silence is left as is."""
    rms = float(audio.pow(2).mean().sqrt())
    if rms < 1e-6:
        return audio
    gain = 10.0 ** (target_dbfs / 20.0) / rms
    if max_peak is not None:
        gain = min(gain, max_peak / float(audio.abs().max()))
    return audio * gain


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


class EpochShuffleSampler(Sampler[tuple[int, int]]):
    """A permutation seeded by (seed + epoch), yielding (index, epoch); `set_epoch` picks the epoch."""

    def __init__(self, num_items: int, seed: int = 0) -> None:
        self.num_items = int(num_items)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use `epoch` for the next pass."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Items per pass."""
        return self.num_items

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Indices of one pass; the epoch then advances by one unless set_epoch is called."""
        epoch = self.epoch
        self.epoch += 1
        generator = torch.Generator().manual_seed(self.seed + epoch)
        for index in torch.randperm(self.num_items, generator=generator).tolist():
            yield index, epoch


class EpochWeightedSampler(Sampler[tuple[int, int]]):
    """Weighted sampling with replacement seeded by (seed + epoch), yielding (index, epoch)."""

    def __init__(self, weights: Sequence[float], num_samples: Optional[int] = None, seed: int = 0) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.double)
        w = self.weights
        if w.ndim != 1 or len(w) == 0 or bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("weights must be a non-empty 1-D sequence of non-negative numbers with a positive sum")
        self.num_samples = len(self.weights) if num_samples is None else int(num_samples)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use `epoch` for the next pass."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Samples per pass."""
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        """Indices of one pass; the epoch then advances by one unless set_epoch is called."""
        epoch = self.epoch
        self.epoch += 1
        generator = torch.Generator().manual_seed(self.seed + epoch)
        for index in torch.multinomial(self.weights, self.num_samples, True, generator=generator).tolist():
            yield index, epoch


def _num_clips(dataset: Any) -> int:
    """Clips in a map-style or sharded dataset."""
    return int(dataset.num_clips) if hasattr(dataset, "num_clips") else len(dataset)


def stratified_weights(species: Sequence[str]) -> list[float]:
    """The seed's sampling weights: 1 / (count of the row's species * number of species)."""
    counts = Counter(species)
    return [1.0 / (counts[name] * len(counts)) for name in species]


class BirdSoundDataModule(pl.LightningDataModule):
    """Train/valid/test loaders over a manifest (or tar shards); synthetic bird songs when no manifest is given."""

    def __init__(
        self,
        manifest: Optional[str] = None,
        sample_rate: int = 32000,
        channels: int = 2,
        crop_length: int = 2**18,
        batch_size: int = 32,
        val_batch_size: Optional[int] = None,
        num_workers: int = 4,
        prefetch_factor: int = 2,
        persistent_workers: bool = True,
        pin_memory: bool = True,
        with_text: bool = False,
        seed: int = 0,
        stratified: bool = False,
        loudness_normalize: bool = False,
        target_dbfs: float = -20.0,
        loudness_max_peak: Optional[float] = 1.0,
        train_split: str = "train",
        val_split: str = "valid",
        test_split: str = "test",
        drop_last: bool = True,
        cache_dir: Optional[str] = None,
        synthetic: Optional[Mapping[str, Any]] = None,
        shards: Optional[str] = None,
        shuffle_buffer: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.manifest = manifest
        self.sample_rate = sample_rate
        self.channels = channels
        self.crop_length = crop_length
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.persistent_workers = persistent_workers
        self.pin_memory = pin_memory
        self.with_text = with_text
        self.seed = seed
        self.stratified = stratified
        self.loudness_normalize = loudness_normalize
        self.target_dbfs = target_dbfs
        self.loudness_max_peak = loudness_max_peak
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        self.drop_last = drop_last
        self.cache_dir = cache_dir
        self.synthetic = dict(synthetic or {})
        self.shards = shards
        self.shuffle_buffer = shuffle_buffer
        self._manifest_path: Optional[Path] = None
        self._rows: Optional[list[dict[str, Any]]] = None
        self.datasets: dict[str, Any] = {}  # AudioDataset, or ShardedAudioDataset with `shards`

    # ------------------------------------------------------------------ manifest

    def synthetic_params(self) -> dict[str, Any]:
        """Synthetic data options: `synthetic` over defaults matching this module (rate, channels, crop length)."""
        duration = max(3.0, math.ceil(2 * self.crop_length / self.sample_rate) / 2) if self.crop_length > 0 else 3.0
        base = {"sample_rate": self.sample_rate, "channels": self.channels, "seed": self.seed, "duration_s": duration}
        return dataset_params(**{**base, **self.synthetic})

    @property
    def manifest_path(self) -> Path:
        """The manifest in use (generating the synthetic data set on first use when `manifest` is None)."""
        if self._manifest_path is None:
            if self.manifest is not None:
                self._manifest_path = Path(self.manifest).expanduser()
            else:
                params = self.synthetic_params()
                root = Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()
                self._manifest_path = generate_synthetic_dataset(root / params_hash(params), **params)
        return self._manifest_path

    def _all_rows(self) -> list[dict[str, Any]]:
        """Every manifest row (cached)."""
        if self._rows is None:
            path = self.manifest_path
            if not path.is_file():
                raise ValueError(f"manifest: {path} does not exist (run `python -m main.data.prepare` first)")
            self._rows = read_manifest(path)
        return self._rows

    def _split_rows(self, split: str) -> list[dict[str, Any]]:
        """Rows of one split."""
        return [row for row in self._all_rows() if row["split"] == split]

    @property
    def num_train_clips(self) -> int:
        """Number of training clips."""
        return len(self._split_rows(self.train_split))

    @property
    def species(self) -> list[str]:
        """Sorted unique scientific names in the manifest."""
        return sorted({str(row["sci_name"]) for row in self._all_rows()})

    def labels(self, split: Optional[str] = None) -> list[str]:
        """Label strings of a split (default: the training split), in manifest order."""
        return [str(row["label"]) for row in self._split_rows(split or self.train_split)]

    # ------------------------------------------------------------------ Lightning hooks

    def prepare_data(self) -> None:
        """Generate the synthetic data set when no manifest is configured (once, on the main process)."""
        if self.manifest is None:
            _ = self.manifest_path

    def _check_config(self) -> None:
        """Raise ValueError naming the offending setting."""
        if self.crop_length <= 0:
            raise ValueError(f"crop_length must be > 0, got {self.crop_length}")
        if self.batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {self.batch_size}")
        if self.val_batch_size is not None and self.val_batch_size <= 0:
            raise ValueError(f"val_batch_size must be > 0, got {self.val_batch_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.shards is not None and self.stratified:
            raise ValueError("stratified: species-weighted sampling needs the manifest loader; "
                             "unset shards or stratified")

    def _dataset(self, key: str, split: str, train: bool) -> Any:
        """Build the dataset of `split` (sharded for train/val when `shards` is set), raising when it is empty."""
        if self.shards is not None and key in ("train_split", "val_split"):
            from .shards import ShardedAudioDataset

            sharded = ShardedAudioDataset(
                Path(self.shards).expanduser(), split, self.sample_rate, self.crop_length, self.channels,
                random_crop=train, with_text=self.with_text, seed=self.seed, shuffle=train,
                shuffle_buffer=self.shuffle_buffer if train else 0,
                loudness_normalize=self.loudness_normalize, target_dbfs=self.target_dbfs,
                loudness_max_peak=self.loudness_max_peak,
            )
            if sharded.num_clips == 0:
                raise ValueError(f"{key}: split {split!r} of the shards in {self.shards} is empty")
            return sharded
        dataset = self._audio_dataset(split, random_crop=train, with_text=self.with_text)
        if len(dataset) == 0:
            present = sorted({str(r["split"]) for r in self._all_rows()})
            raise ValueError(f"{key}: split {split!r} of {self.manifest_path} is empty (splits present: {present})")
        return dataset

    def _audio_dataset(self, split: str, random_crop: bool, with_text: bool) -> AudioDataset:
        """An `AudioDataset` of `split` of the manifest with this module's audio settings."""
        return AudioDataset(
            self.manifest_path, split, self.sample_rate, self.crop_length, self.channels,
            random_crop=random_crop, with_text=with_text, seed=self.seed,
            loudness_normalize=self.loudness_normalize, target_dbfs=self.target_dbfs,
            loudness_max_peak=self.loudness_max_peak,
        )

    def species_items(self, split: str, per_species: int, max_species: Optional[int] = None,
                      seed: int = 0) -> list[dict[str, Any]]:
        """Start crops of up to `per_species` recordings per species of `split` with their 'text' and 'sci_name'
        (what `main.callbacks.LatentSpeciesCallback` fits and prompts with); unreadable files are left out."""
        from main.analysis.latent_species import select_per_species

        if self.manifest is None and self.shards is not None:
            raise ValueError("the latent species probe reads recordings through datamodule.manifest; set it "
                             "next to datamodule.shards")
        dataset = self._audio_dataset(split, random_crop=False, with_text=True)
        items = []
        for index in select_per_species(dataset.sci_names, per_species, max_species, seed):
            item = dataset[index]
            if item is not None:
                items.append({**item, "sci_name": dataset.sci_names[index]})
        return items

    def setup(self, stage: Optional[str] = None) -> None:
        """Build the datasets a stage needs ('fit': train+val, 'validate': val, 'test'/'predict': test)."""
        self._check_config()
        if self.shards is None:
            self._all_rows()
        if stage in (None, "fit"):
            self.datasets["train"] = self._dataset("train_split", self.train_split, train=True)
            clips = _num_clips(self.datasets["train"])
            if self.drop_last and clips < self.batch_size:
                raise ValueError(
                    f"batch_size: {self.batch_size} exceeds the {clips} training clips "
                    "and drop_last=True leaves no training batch"
                )
        if stage in (None, "fit", "validate"):
            self.datasets["val"] = self._dataset("val_split", self.val_split, train=False)
        with_test = stage is None and (self.shards is None or self.manifest is not None)
        if stage in ("test", "predict") or (with_test and self._split_rows(self.test_split)):
            self.datasets["test"] = self._dataset("test_split", self.test_split, train=False)

    def _loader(
        self, dataset: Any, batch_size: int, sampler: Optional[Sampler], drop_last: bool
    ) -> DataLoader:
        """A DataLoader with this module's worker settings and `collate_audio` (a ShardedDataLoader for shards)."""
        workers = self.num_workers
        extra: dict[str, Any] = {}
        if workers > 0:
            extra = {"prefetch_factor": self.prefetch_factor, "persistent_workers": self.persistent_workers}
        loader_class: type[DataLoader] = DataLoader
        if isinstance(dataset, torch.utils.data.IterableDataset):
            from .shards import ShardedDataLoader

            loader_class = ShardedDataLoader
            if dataset.shuffle:  # training: follow the trainer's epoch (also after resuming)
                extra["epoch_fn"] = self._trainer_epoch
        return loader_class(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            drop_last=drop_last,
            collate_fn=functools.partial(
                collate_audio, channels=self.channels, crop_length=self.crop_length, with_text=self.with_text
            ),
            **extra,
        )

    def _trainer_epoch(self) -> Optional[int]:
        """The attached trainer's current epoch, or None."""
        trainer = getattr(self, "trainer", None)
        return None if trainer is None else int(trainer.current_epoch)

    def _get(self, key: str) -> Any:
        """A dataset built by setup(), or a clear error."""
        if key not in self.datasets:
            stage = {"train": "fit", "val": "validate", "test": "test"}[key]
            self.setup(stage)
        return self.datasets[key]

    def train_sampler(self, dataset: AudioDataset) -> Sampler:
        """The epoch-seeded training sampler: shuffled, or weighted by species when `stratified`."""
        if self.stratified:
            weights = stratified_weights(dataset.sci_names)
            return EpochWeightedSampler(weights, len(weights), seed=self.seed)
        return EpochShuffleSampler(len(dataset), seed=self.seed)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (or stratified) random crops of the training split."""
        dataset = self._get("train")
        sampler = None if isinstance(dataset, torch.utils.data.IterableDataset) else self.train_sampler(dataset)
        return self._loader(dataset, self.batch_size, sampler, self.drop_last)

    def val_dataloader(self) -> DataLoader:
        """Start crops of the validation split, in manifest order."""
        return self._loader(self._get("val"), self.val_batch_size or self.batch_size, None, False)

    def test_dataloader(self) -> DataLoader:
        """Start crops of the test split, in manifest order."""
        return self._loader(self._get("test"), self.val_batch_size or self.batch_size, None, False)

    def predict_dataloader(self) -> DataLoader:
        """Same as the test loader."""
        return self.test_dataloader()
