"""Pre-encoded DiffAE latents and text embeddings: the folder format (`format`) and DiffGen's data (`dataset`)."""

from __future__ import annotations

from .dataset import LatentDataModule, LatentDataset, PreencodedStore, collate_latents

__all__ = ["LatentDataModule", "LatentDataset", "PreencodedStore", "collate_latents"]
