"""The Lightning data module: train/valid/test loaders over a manifest, a streamed data set or synthetic birds.

Datasets: `main.data.dataset.AudioDataset` over the manifest's rows, with the epoch-seeded samplers of
`main.data.samplers`. With ``stream`` (a folder written by ``python -m main.data.shard``, or an
``s3://bucket/prefix`` it was copied to), the train and validation loaders stream
`main.data.streaming.StreamingAudioDataset` through `StreamingAudioLoader` instead (LitData: split across
DDP ranks and workers, shuffled by chunk and clip, exact mid-epoch resume); the test loader still reads
the manifest. ``captions`` (`main.data.captions.CaptionConfig`'s keys) draws each training caption per recording
and epoch from its metadata; validation, test and the species probe keep the exact labels.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any, Mapping, Optional

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Sampler

from ..provenance import file_sha256
from .audio import load_recording
from .captions import CaptionConfig
from .dataset import AudioDataset, collate_audio
from .manifest import read_manifest
from .resumable import ResumableDataLoader, loader_generator
from .samplers import EpochShuffleSampler, EpochWeightedSampler, select_per_species, stratified_weights
from .synthetic import dataset_params, default_cache_dir, generate_synthetic_dataset, params_hash

__all__ = ["BirdSoundDataModule", "load_recording"]  # load_recording: re-exported for main.sample


def _num_clips(dataset: Any) -> int:
    """Clips in a map-style or streamed dataset."""
    return int(dataset.num_clips) if hasattr(dataset, "num_clips") else len(dataset)


def _file_digest(path: str) -> dict[str, Any]:
    """{"sha256": ...} of a file, or {"sha256": None, "error": ...} for one that cannot be read (training skips and
    counts such files; recording what it was trained on must not stop it)."""
    try:
        return {"sha256": file_sha256(path)}
    except OSError as error:
        return {"sha256": None, "error": f"{type(error).__name__}: {error.strerror or error}"}


class BirdSoundDataModule(pl.LightningDataModule):
    """Train/valid/test loaders over a manifest (or a streamed data set); synthetic bird songs when neither is given."""

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
        train_split: str = "train",
        val_split: str = "valid",
        test_split: str = "test",
        drop_last: bool = True,
        cache_dir: Optional[str] = None,
        synthetic: Optional[Mapping[str, Any]] = None,
        stream: Optional[str] = None,
        stream_cache_dir: Optional[str] = None,
        stream_max_cache_size: Optional[str] = None,
        silence_dbfs: Optional[float] = -90.0,
        captions: Optional[Mapping[str, Any]] = None,
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
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        self.drop_last = drop_last
        self.cache_dir = cache_dir
        self.synthetic = dict(synthetic or {})
        self.stream = stream
        self.stream_cache_dir = stream_cache_dir
        self.stream_max_cache_size = stream_max_cache_size
        self.silence_dbfs = silence_dbfs
        self.captions = CaptionConfig.from_mapping(captions)
        self._manifest_path: Optional[Path] = None
        self._rows: Optional[list[dict[str, Any]]] = None
        self._training_files: Optional[list[dict[str, Any]]] = None
        self.datasets: dict[str, Any] = {}  # AudioDataset, or StreamingAudioDataset with `stream`

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

    def training_files(self) -> Optional[list[dict[str, Any]]]:
        """Each training recording's manifest path, species and SHA-256 (recorded in checkpoints and exports, so
        anyone can check what a model was trained on); None for a streamed data set, whose files are not local."""
        if self.stream is not None:
            return None
        if self._training_files is None:
            self._training_files = [{"file": str(row["file"]), "sci_name": str(row.get("sci_name", "")),
                                     **_file_digest(row["path"])} for row in self._split_rows(self.train_split)]
        return self._training_files

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
        """Generate the synthetic data set when neither a manifest nor a stream is configured (once, main process)."""
        if self.manifest is None and self.stream is None:
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
        if self.stream is not None and self.stratified:
            raise ValueError("stratified: species-weighted sampling needs the manifest loader; "
                             "unset stream or stratified")

    def _dataset(self, key: str, split: str, train: bool) -> Any:
        """Build the dataset of `split` (streamed for train/val when `stream` is set), raising when it is empty."""
        if self.stream is not None and key in ("train_split", "val_split"):
            from .streaming import StreamingAudioDataset

            streamed = StreamingAudioDataset(
                self.stream, split, self.sample_rate, self.crop_length, self.channels,
                random_crop=train, with_text=self.with_text, seed=self.seed, shuffle=train,
                cache_dir=self.stream_cache_dir, max_cache_size=self.stream_max_cache_size,
                silence_dbfs=self.silence_dbfs, captions=self.captions if train else None,
            )
            if streamed.num_clips == 0:
                raise ValueError(f"{key}: split {split!r} of the streamed data set {self.stream} is empty")
            return streamed
        dataset = self._audio_dataset(split, random_crop=train, with_text=self.with_text, captions=train)
        if len(dataset) == 0:
            present = sorted({str(r["split"]) for r in self._all_rows()})
            raise ValueError(f"{key}: split {split!r} of {self.manifest_path} is empty (splits present: {present})")
        return dataset

    def _audio_dataset(self, split: str, random_crop: bool, with_text: bool, captions: bool = False) -> AudioDataset:
        """An `AudioDataset` of `split` of the manifest with this module's audio settings (and caption variants when
        `captions`)."""
        return AudioDataset(
            self.manifest_path, split, self.sample_rate, self.crop_length, self.channels,
            random_crop=random_crop, with_text=with_text, seed=self.seed, silence_dbfs=self.silence_dbfs,
            captions=self.captions if captions else None,
        )

    def species_items(self, split: str, per_species: int, max_species: Optional[int] = None,
                      seed: int = 0) -> list[dict[str, Any]]:
        """Start crops of up to `per_species` recordings per species of `split` with their 'text' and 'sci_name'
        (what `main.callbacks.LatentSpeciesCallback` fits and prompts with); unreadable files are left out."""
        if self.manifest is None and self.stream is not None:
            raise ValueError("the latent species probe reads recordings through datamodule.manifest; set it "
                             "next to datamodule.stream")
        dataset = self._audio_dataset(split, random_crop=False, with_text=True)
        items = []
        for index in select_per_species(dataset.sci_names, per_species, max_species, seed):
            item = dataset[index]
            if item is not None and "skip" not in item:
                items.append({**item, "sci_name": dataset.sci_names[index]})
        return items

    def setup(self, stage: Optional[str] = None) -> None:
        """Build the datasets a stage needs ('fit': train+val, 'validate': val, 'test'/'predict': test)."""
        self._check_config()
        if self.stream is None:
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
        with_test = stage is None and (self.stream is None or self.manifest is not None)
        if stage in ("test", "predict") or (with_test and self._split_rows(self.test_split)):
            self.datasets["test"] = self._dataset("test_split", self.test_split, train=False)

    def _loader(
        self, dataset: Any, batch_size: int, sampler: Optional[Sampler], drop_last: bool, train: bool = False
    ) -> DataLoader:
        """A DataLoader with this module's worker settings and `collate_audio` (a StreamingAudioLoader if streamed);
        training over the manifest uses a `ResumableDataLoader`, so a mid-epoch checkpoint resumes the epoch."""
        workers = self.num_workers
        extra: dict[str, Any] = {}
        if workers > 0:
            extra = {"prefetch_factor": self.prefetch_factor, "persistent_workers": self.persistent_workers}
        collate = functools.partial(
            collate_audio, channels=self.channels, crop_length=self.crop_length, with_text=self.with_text
        )
        pin_memory = self.pin_memory and torch.cuda.is_available()
        if isinstance(dataset, torch.utils.data.IterableDataset):
            from .streaming import StreamingAudioLoader

            extra.pop("persistent_workers", None)  # each epoch's workers start from the loader's state
            # A DataLoader draws its workers' base seed when an iterator starts, from the global torch RNG unless
            # given a generator; a resumed run starts its iterator after the checkpoint restored that RNG, so
            # the draw would shift the training noise. Crops do not use it (seeded by seed, epoch and key).
            return StreamingAudioLoader(dataset, batch_size=batch_size, num_workers=workers, pin_memory=pin_memory,
                                        drop_last=drop_last, collate_fn=collate, generator=loader_generator(self.seed),
                                        **extra)
        loader_class: type[DataLoader] = ResumableDataLoader if train else DataLoader
        return loader_class(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=workers,
            pin_memory=pin_memory,
            drop_last=drop_last,
            collate_fn=collate,
            generator=loader_generator(self.seed),  # iterators leave the global RNG alone
            **extra,
        )

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
        return self._loader(dataset, self.batch_size, sampler, self.drop_last, train=sampler is not None)

    def val_dataloader(self) -> DataLoader:
        """Start crops of the validation split, in manifest order."""
        return self._loader(self._get("val"), self.val_batch_size or self.batch_size, None, False)

    def test_dataloader(self) -> DataLoader:
        """Start crops of the test split, in manifest order."""
        return self._loader(self._get("test"), self.val_batch_size or self.batch_size, None, False)

    def predict_dataloader(self) -> DataLoader:
        """Same as the test loader."""
        return self.test_dataloader()
