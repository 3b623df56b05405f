"""Procedural synthetic bird songs (`songs`) and the data set written from them (`dataset`)."""

from __future__ import annotations

from .dataset import (
    BACKGROUND_PROBABILITY,
    GENERATOR_VERSION,
    MANIFEST_FILE,
    METADATA_FILE,
    PARAMS_FILE,
    dataset_params,
    default_cache_dir,
    generate_synthetic_dataset,
    params_hash,
)
from .songs import MIN_SAMPLE_RATE, SPECIES, Species, species_names, synthesize_recording

__all__ = [
    "BACKGROUND_PROBABILITY",
    "GENERATOR_VERSION",
    "MANIFEST_FILE",
    "METADATA_FILE",
    "MIN_SAMPLE_RATE",
    "PARAMS_FILE",
    "SPECIES",
    "Species",
    "dataset_params",
    "default_cache_dir",
    "generate_synthetic_dataset",
    "params_hash",
    "species_names",
    "synthesize_recording",
]
