"""Training data for DiffGen from pre-encoded latents and text embeddings (see `main.preencode`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from main.files import PathLike

from ..captions import CaptionConfig, caption_rng, choose
from ..resumable import ResumableDataLoader, loader_generator
from ..samplers import EpochShuffleSampler, select_per_species
from .format import LABELS_FILE, LATENTS_FILE, TEXT_OFFSETS_FILE, TEXT_TOKENS_FILE, read_items, read_meta


class PreencodedStore:
    """Memory-mapped access to a pre-encoded folder (opened lazily, so it is cheap to send to workers)."""

    def __init__(self, folder: PathLike):
        self.folder = Path(folder)
        self.meta: dict[str, Any] = read_meta(self.folder)
        self.items = read_items(self.folder)
        self.labels: list[str] = json.loads((self.folder / LABELS_FILE).read_text())
        self._latents: Optional[np.memmap] = None
        self._tokens: Optional[np.memmap] = None
        self._text_offsets: Optional[np.ndarray] = None

    def _open(self) -> None:
        m, dtype = self.meta, np.dtype(self.meta["dtype"])
        self._latents = np.memmap(self.folder / LATENTS_FILE, dtype=dtype, mode="r",
                                  shape=(m["latent_frames"], m["latent_channels"]))
        self._tokens = np.memmap(self.folder / TEXT_TOKENS_FILE, dtype=dtype, mode="r",
                                 shape=(max(m["text_tokens"], 1), m["text_features"]))
        self._text_offsets = np.load(self.folder / TEXT_OFFSETS_FILE)

    def latent(self, offset: int, frames: int) -> Tensor:
        """Latent frames [channels, frames] starting at absolute frame `offset`."""
        if self._latents is None:
            self._open()
        return torch.from_numpy(np.array(self._latents[offset:offset + frames], dtype=np.float32).T)

    def text(self, label: int) -> tuple[Tensor, Tensor]:
        """Embedding [max_length, features] (zero-padded) and mask [max_length] of label number `label`."""
        if self._tokens is None:
            self._open()
        start, stop = int(self._text_offsets[label]), int(self._text_offsets[label + 1])
        max_length = int(self.meta["text_max_length"])
        embedding = torch.zeros(max_length, int(self.meta["text_features"]))
        embedding[: stop - start] = torch.from_numpy(np.array(self._tokens[start:stop], dtype=np.float32))
        mask = torch.arange(max_length) < (stop - start)
        return embedding, mask

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_latents"] = state["_tokens"] = state["_text_offsets"] = None
        return state


class LatentDataset(Dataset):
    """Latent crops of `latent_length` frames (random for training, seeded by (seed, epoch, index)) with the
    recording's cached text embedding; recordings shorter than the crop are zero-padded (`LatentDataModule` warns:
    pre-encode with `--min-seconds` to pad their audio instead). With `exact_p` (caption variants on), the text is
    the exact label with that probability, else one of the recording's pre-encoded variants, drawn by (seed, epoch,
    index); a recording pre-encoded without variants keeps its label."""

    def __init__(self, store: PreencodedStore, split: str, latent_length: int, random_crop: bool, seed: int = 0,
                 exact_p: Optional[float] = None):
        self.store = store
        self.exact_p = exact_p
        self.items = [item for item in store.items if item["split"] == split]
        self.latent_length = int(latent_length)
        self.random_crop = random_crop
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        """Recordings in the split."""
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for crops of plain integer indices."""
        self.epoch = int(epoch)

    def __getitem__(self, item: Union[int, tuple[int, int]]) -> dict[str, Any]:
        """{'latent': [C, latent_length], 'embedding': [L, D], 'embedding_mask': [L], 'text': label, 'index'}."""
        index, epoch = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (int(item), self.epoch)
        record = self.items[index]
        start = 0
        if self.random_crop and record["frames"] > self.latent_length:
            rng = np.random.default_rng([self.seed, epoch, index])
            start = int(rng.integers(0, record["frames"] - self.latent_length + 1))
        frames = min(self.latent_length, record["frames"] - start)
        latent = self.store.latent(record["offset"] + start, frames)
        if frames < self.latent_length:
            latent = torch.nn.functional.pad(latent, (0, self.latent_length - frames))
        label = record["label"]
        if self.exact_p is not None and record["variants"]:
            label = choose(label, record["variants"], self.exact_p, caption_rng(self.seed, epoch, index))
        embedding, mask = self.store.text(label)
        return {"latent": latent, "embedding": embedding, "embedding_mask": mask,
                "text": self.store.labels[label], "index": index}


def collate_latents(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack latent items into the batch format DiffGen reads."""
    return {
        "latent": torch.stack([b["latent"] for b in batch]),
        "embedding": torch.stack([b["embedding"] for b in batch]),
        "embedding_mask": torch.stack([b["embedding_mask"] for b in batch]),
        "text": [b["text"] for b in batch],
        "skipped": torch.tensor(0),
        "items": torch.tensor([int(b["index"]) for b in batch]),
    }


class LatentDataModule(pl.LightningDataModule):
    """DiffGen data from a pre-encoded folder; `crop_length` is in audio samples, as for the audio datamodule.
    `captions` (``datamodule.captions``): when enabled, training draws among each recording's pre-encoded caption
    variants and its exact label (`exact_p`; the other keys apply at pre-encoding); validation keeps the labels."""

    def __init__(
        self,
        preencoded: str,
        crop_length: int = 2**20,
        sample_rate: int = 32000,
        batch_size: int = 32,
        val_batch_size: Optional[int] = None,
        num_workers: int = 4,
        seed: int = 0,
        train_split: str = "train",
        val_split: str = "valid",
        drop_last: bool = True,
        captions: Optional[Mapping[str, Any]] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.store = PreencodedStore(preencoded)
        self.captions = CaptionConfig.from_mapping(captions)
        if self.captions.enabled and not any(item["variants"] for item in self.store.items):
            rank_zero_warn(f"datamodule.captions.enabled but {preencoded} was pre-encoded without caption variants: "
                           "each recording trains on its one label; pre-encode with `python -m main.preencode ... "
                           "--captions` for variants")
        meta = self.store.meta
        factor = int(meta["downsample_factor"])
        if crop_length % factor:
            raise ValueError(f"datamodule.crop_length={crop_length} must be a multiple of the DiffAE factor {factor}")
        if int(meta["sample_rate"]) != sample_rate:
            raise ValueError(f"datamodule.sample_rate={sample_rate} but {preencoded} was encoded at "
                             f"{meta['sample_rate']} Hz")
        self.latent_length = crop_length // factor
        short = sum(item["frames"] < self.latent_length for item in self.store.items)
        if short:
            # a zero latent is not the latent of silence: DiffGen learns to end such clips in it, and the decoder
            # renders it as a burst (BENCHMARKS.md, "Sound fidelity")
            rank_zero_warn(f"{short} of the {len(self.store.items)} recordings in {preencoded} are shorter than "
                           f"datamodule.crop_length={crop_length} and are padded with zero latents; pre-encode "
                           f"with `python -m main.preencode ... --min-seconds {crop_length / sample_rate!r}` to pad "
                           "their audio instead, as the audio datamodule does")

    def _dataset(self, split: str, train: bool) -> LatentDataset:
        exact_p = self.captions.exact_p if train and self.captions.enabled else None
        dataset = LatentDataset(self.store, split, self.latent_length, random_crop=train, seed=self.hparams.seed,
                                exact_p=exact_p)
        if len(dataset) == 0:
            raise ValueError(f"split {split!r} of {self.store.folder} is empty (datamodule.preencoded)")
        return dataset

    def _loader(self, dataset: LatentDataset, batch_size: int, sampler: Any, drop_last: bool) -> DataLoader:
        """Training (with a sampler): a `ResumableDataLoader`, so a mid-epoch checkpoint resumes the epoch."""
        workers = self.hparams.num_workers
        loader_class = DataLoader if sampler is None else ResumableDataLoader
        return loader_class(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                            collate_fn=collate_latents, drop_last=drop_last, persistent_workers=workers > 0,
                            generator=loader_generator(self.hparams.seed))

    def species_items(self, split: str, per_species: int, max_species: Optional[int] = None,
                      seed: int = 0) -> list[dict[str, Any]]:
        """Start crops of up to `per_species` recordings per species of `split` with their cached text embedding,
        'text' and 'sci_name' (what `main.callbacks.LatentSpeciesCallback` fits and prompts with)."""
        dataset = LatentDataset(self.store, split, self.latent_length, random_crop=False, seed=self.hparams.seed)
        names = [str(item.get("sci_name", "")) for item in dataset.items]
        return [{**dataset[i], "sci_name": names[i]} for i in select_per_species(names, per_species, max_species,
                                                                                 seed)]

    def train_dataloader(self) -> DataLoader:
        """Shuffled (epoch-seeded) random latent crops of the training split."""
        dataset = self._dataset(self.hparams.train_split, train=True)
        sampler = EpochShuffleSampler(len(dataset), seed=self.hparams.seed)
        return self._loader(dataset, self.hparams.batch_size, sampler, self.hparams.drop_last)

    def val_dataloader(self) -> DataLoader:
        """Start crops of the validation split."""
        dataset = self._dataset(self.hparams.val_split, train=False)
        return self._loader(dataset, self.hparams.val_batch_size or self.hparams.batch_size, None, False)
