"""Shared by the data tests: the test-sized sample rate and crop, and a small synthetic data set."""

from __future__ import annotations

from pathlib import Path

import pytest

from main.data.synthetic import generate_synthetic_dataset

SR = 16000
CROP = 8192
SMALL = dict(clips_per_species=4, duration_s=1.5, sample_rate=SR, num_species=8)


def small_synthetic_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 species x 4 clips x 1.5 s stereo FLAC at 16 kHz, generated in a new temporary folder."""
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic"), **SMALL)
