"""`train.py` on a LitData stream: a run stopped mid-epoch and resumed from last.ckpt ends where an
uninterrupted run ends, bit for bit (CPU), because the train loader's state travels in the checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from main.config import ConfigError, validate_config
from main.data.streaming import write_streaming_dataset
from tests.data_helpers import small_synthetic_manifest
from tests.test_train_cli import compose_exp, run_train

# 25 training clips, batch 4, drop_last: 6 batches per epoch; 9 steps end inside epoch 1, the stop at step 4
# lies inside epoch 0, so the resumed run starts mid-epoch and then crosses an epoch boundary.
TOTAL, STOP = 9, 4


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small synthetic set as a stream of 4-clip chunks."""
    out = tmp_path_factory.mktemp("stream")
    write_streaming_dataset(small_synthetic_manifest(tmp_path_factory), out, chunk_size=4)
    return out


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """The model and EMA weights of a checkpoint."""
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.slow
def test_stopped_mid_epoch_and_resumed_equals_uninterrupted(stream: Path, tmp_path: Path) -> None:
    common = ["exp=dmae_tiny", "datamodule=streamed", f"datamodule.stream={stream}", "datamodule.num_workers=2",
              "callbacks.checkpoint.every_n_train_steps=1", "callbacks.audio_preview.every_n_steps=100000",
              "callbacks.audio_preview.on_train_end=false"]
    # the uninterrupted and the stopped run: one multirun process, a job each (runs/0 and runs/1)
    runs = run_train(tmp_path, *common, f"trainer.max_steps={TOTAL},{STOP}", f"hydra.sweep.dir={tmp_path / 'runs'}",
                     multirun=True)
    assert runs.returncode == 0, runs.stderr[-3000:]
    last = tmp_path / "runs/1/checkpoints/last.ckpt"
    state = torch.load(last, weights_only=False)
    assert state["global_step"] == STOP
    loader_state = state["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader_state["num_samples_yielded"] == STOP * 4 and loader_state["current_epoch"] == 1
    resumed = run_train(tmp_path, *common, f"+ckpt={last}", f"trainer.max_steps={TOTAL}",
                        f"hydra.run.dir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = _weights(tmp_path / "runs/0/checkpoints/last.ckpt")
    b = _weights(tmp_path / "resumed/checkpoints/last.ckpt")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


def test_a_missing_stream_fails_at_startup_naming_the_key(stream: Path, tmp_path: Path) -> None:
    validate_config(compose_exp("dmae_tiny", f"paths.root_dir={tmp_path}", "datamodule=streamed",
                                f"datamodule.stream={stream}"))
    with pytest.raises(ConfigError, match=r"datamodule\.stream="):
        validate_config(compose_exp("dmae_tiny", f"paths.root_dir={tmp_path}", "datamodule=streamed",
                                    f"datamodule.stream={tmp_path / 'nothing'}"))
    validate_config(compose_exp("dmae_tiny", f"paths.root_dir={tmp_path}", "datamodule=streamed",
                                "datamodule.stream=s3://bucket/prefix"))  # remote: LitData checks it when it streams
