"""Faults a long run meets, injected into the real `train.py` (main/faults.py's hooks): SIGKILL inside a checkpoint
write and after a step (one chain of runs), a killed two-process DDP run, a killed DiffGen on pre-encoded latents,
a full disk, and bad files at training time.

Each kill-and-resume test compares the resumed run's last.ckpt with an uninterrupted run's (weights, EMA,
optimizer and LR-scheduler state, bit for bit) and, from the item log (BIRD_FAULT_ITEM_LOG), proves that the
training loop saw every item exactly once per epoch. Deselect locally with `-m "not slow"`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import ROOT

# 17 training clips, batches of 4 with the last one kept (5 batches), 2 batches per optimizer step (3 steps per
# epoch), 2 workers, warm-up + cosine LR, periodic checkpoints every 2 steps (mid-epoch ones included), previews.
COMMON = ["exp=dmae_tiny", "datamodule.num_workers=2", "+datamodule.drop_last=false",
          "trainer.accumulate_grad_batches=2", "model.lr_warmup_steps=2", "model.lr_schedule=cosine",
          "trainer.max_steps=6", "callbacks.checkpoint.every_n_train_steps=2",
          "callbacks.audio_preview.every_n_steps=3", "callbacks.audio_preview.on_train_end=false"]
TRAIN_ITEMS = 17


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1", **extra}


def train(root: Path, run: str, *overrides: str, timeout: float = 400, **env: str) -> subprocess.CompletedProcess:
    """Run `train.py` (in its own process group, killed whole on timeout) into `root/run`."""
    command = [sys.executable, "train.py", f"paths.root_dir={root}", f"hydra.run.dir={root / run}", *overrides]
    process = subprocess.Popen(command, cwd=ROOT, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def read_log(path: Path) -> list[dict[str, Any]]:
    """The item log's records (all ranks: PATH and PATH.rankN)."""
    records = []
    for file in sorted(path.parent.glob(path.name + "*")):
        records += [json.loads(line) for line in file.read_text().splitlines() if line.strip()]
    return records


def committed(records: list[dict[str, Any]], resumed_at: Optional[int]) -> list[dict[str, Any]]:
    """The records a checkpoint at step `resumed_at` holds: batches of earlier optimizer steps (None: all)."""
    return [r for r in records if resumed_at is None or r["step"] < resumed_at]


def key(records: list[dict[str, Any]]) -> list[tuple[int, int, int, list[int]]]:
    return sorted((r["rank"], r["epoch"], r["batch_idx"], r["items"]) for r in records)


def assert_each_item_once_per_epoch(records: list[dict[str, Any]], epochs: int, items: int = TRAIN_ITEMS) -> None:
    seen: dict[int, list[int]] = {}
    for r in records:
        seen.setdefault(r["epoch"], []).extend(r["items"])
    assert sorted(seen) == list(range(epochs))
    for epoch, served in seen.items():
        assert sorted(served) == list(range(items)), f"epoch {epoch}: {sorted(served)}"


def assert_same_state(a_path: Path, b_path: Path) -> None:
    a, b = torch.load(a_path, weights_only=True), torch.load(b_path, weights_only=True)
    assert a["global_step"] == b["global_step"] and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    differ = [k for k in a["state_dict"] if not torch.equal(a["state_dict"][k], b["state_dict"][k])]
    assert not differ, f"weights/EMA differ: {differ[:5]}"
    for x, y in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert torch.equal(x["exp_avg"], y["exp_avg"]) and torch.equal(x["exp_avg_sq"], y["exp_avg_sq"])
    assert a["lr_schedulers"] == b["lr_schedulers"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run (its folder holds checkpoints/last.ckpt and items.log)."""
    root = tmp_path_factory.mktemp("faults")
    result = train(root, "straight", *COMMON, BIRD_FAULT_ITEM_LOG=str(root / "straight.items"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert_each_item_once_per_epoch(read_log(root / "straight.items"), epochs=2)
    return root


def stall_and_kill(root: Path, run: str, step: int, *overrides: str, **env: str) -> Path:
    """Run `train.py` until it stalls inside its `step`-th checkpoint write (after the temporary file is written,
    before the rename), SIGKILL it there and return the marker file (it names the file being written)."""
    marker = root / f"{run}.stalled"
    process = subprocess.Popen(
        [sys.executable, "train.py", f"paths.root_dir={root}", f"hydra.run.dir={root / run}", *overrides],
        cwd=ROOT, env=_env(BIRD_FAULT_STALL_CHECKPOINT=f"{step}:{marker}", **env), stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None, process.stderr.read()[-3000:] if process.stderr else ""
            assert time.monotonic() < deadline, "timed out waiting for the stalled checkpoint write"
            time.sleep(0.1)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return marker


@pytest.mark.slow
def test_killed_in_a_checkpoint_write_and_at_a_step_resumes_exactly(reference, tmp_path):
    """Two kills in one chain of runs, each resumed with +ckpt=<the previous run's last.ckpt>:
    1. SIGKILL inside a checkpoint write: after the temporary file of last.ckpt (step 4) was written, before the
       rename; last.ckpt is still the complete step-2 file and the temporary file is left behind;
    2. resumed from it, SIGKILL right after step 5 (mid-epoch 1, between two periodic checkpoints): the resumed
       run's own last.ckpt (step 4) is what the next run resumes from;
    3. resumed to the end: the same final state as the uninterrupted run (weights, EMA, optimizer and LR-scheduler
       state, bit for bit), and every item seen once per epoch across the three runs."""
    marker = stall_and_kill(tmp_path, "seg0", 4, *COMMON, BIRD_FAULT_ITEM_LOG=str(tmp_path / "seg0.items"))
    checkpoints = tmp_path / "seg0/checkpoints"
    assert marker.read_text().endswith("last.ckpt")
    assert list(checkpoints.glob(".last.ckpt.*.tmp")), "the kill should leave the temporary file behind"
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2
    effective = committed(read_log(tmp_path / "seg0.items"), 2)
    kill_at = 5
    killed = train(tmp_path, "seg1", *COMMON, f"+ckpt={checkpoints / 'last.ckpt'}",
                   BIRD_FAULT_KILL_AT_STEP=str(kill_at), BIRD_FAULT_ITEM_LOG=str(tmp_path / "seg1.items"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpt = tmp_path / "seg1/checkpoints/last.ckpt"
    assert int(torch.load(ckpt, weights_only=True)["global_step"]) == kill_at // 2 * 2  # its last periodic one
    effective += committed(read_log(tmp_path / "seg1.items"), kill_at // 2 * 2)
    result = train(tmp_path, "seg2", *COMMON, f"+ckpt={ckpt}", BIRD_FAULT_ITEM_LOG=str(tmp_path / "seg2.items"))
    assert result.returncode == 0, result.stderr[-3000:]
    effective += read_log(tmp_path / "seg2.items")
    assert key(effective) == key(read_log(reference / "straight.items"))
    assert_each_item_once_per_epoch(effective, epochs=2)
    assert_same_state(reference / "straight/checkpoints/last.ckpt", tmp_path / "seg2/checkpoints/last.ckpt")


DDP = ["exp=dmae_tiny", "trainer.devices=2", "trainer.strategy=ddp", "trainer.accelerator=cpu",
       "trainer.max_steps=4", "callbacks.checkpoint.every_n_train_steps=1", "callbacks.audio_preview.every_n_steps=2",
       "callbacks.audio_preview.on_train_end=false"]


@pytest.mark.slow
def test_ddp_run_killed_and_resumed_matches_uninterrupted(tmp_path):
    """Two CPU processes (gloo): both killed after step 3 (mid-epoch 1) and resumed: the final state equals the
    uninterrupted DDP run's (every rank's RNG state is in the checkpoint), and each rank's item order too.
    The uninterrupted run also pins DDP on CPU from the command line: both members start, rank 0 writes the
    previews and last.ckpt at the final step."""
    straight = train(tmp_path, "straight", *DDP, BIRD_FAULT_ITEM_LOG=str(tmp_path / "straight.items"))
    output = straight.stdout + straight.stderr
    assert straight.returncode == 0, output[-3000:]
    assert "MEMBER: 2/2" in output and "finished at step 4" in output
    assert (tmp_path / "straight/previews/step_00000002").is_dir()
    assert torch.load(tmp_path / "straight/checkpoints/last.ckpt", weights_only=True)["global_step"] == 4
    killed = train(tmp_path, "killed", *DDP, BIRD_FAULT_KILL_AT_STEP="3",
                   BIRD_FAULT_ITEM_LOG=str(tmp_path / "killed.items"))
    assert killed.returncode == -signal.SIGKILL, (killed.stdout + killed.stderr)[-3000:]
    ckpt = tmp_path / "killed/checkpoints/last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    assert state["global_step"] == 3 and len(state["rng_states_per_rank"]) == 2
    resumed = train(tmp_path, "resumed", *DDP, f"+ckpt={ckpt}", BIRD_FAULT_ITEM_LOG=str(tmp_path / "resumed.items"))
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert_same_state(tmp_path / "straight/checkpoints/last.ckpt", tmp_path / "resumed/checkpoints/last.ckpt")
    effective = committed(read_log(tmp_path / "killed.items"), 3) + read_log(tmp_path / "resumed.items")
    assert key(effective) == key(read_log(tmp_path / "straight.items"))


def test_disk_full_while_saving_names_the_path_and_keeps_previous_checkpoint(tmp_path, monkeypatch):
    from main.checkpointing import AtomicCheckpointIO, CheckpointWriteError

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)
    real_write = Path.write_bytes

    def full_disk(self: Path, data: Any) -> int:
        if self.name.startswith(".last.ckpt."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(CheckpointWriteError, match="no space left") as caught:
        io.save_checkpoint({"step": 2, "blob": torch.zeros(1000)}, target)
    assert str(target) in str(caught.value) and "free" in str(caught.value)
    assert caught.value.errno == errno.ENOSPC
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left


@pytest.fixture
def damaged_manifest(tmp_path) -> Path:
    """A copy of the tiny experiment's synthetic data with four training files damaged after preparation."""
    from main.config import register_resolvers
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["exp=dmae_tiny", f"paths.root_dir={tmp_path}"])
    source = instantiate(cfg.datamodule).manifest_path
    folder = tmp_path / "damaged"
    shutil.copytree(source.parent, folder)
    from main.data.manifest import read_manifest

    train_files = [folder / row["file"] for row in read_manifest(folder / source.name) if row["split"] == "train"]
    audio, rate = sf.read(train_files[0], dtype="float32")
    nan = audio.copy()
    nan[::500] = np.nan  # in every crop
    sf.write(train_files[0], nan, rate, format="WAV", subtype="FLOAT")  # libsndfile reads by content, not name
    sf.write(train_files[1], np.zeros_like(audio), rate, format="WAV", subtype="PCM_16")
    sf.write(train_files[2], audio, rate, format="WAV", subtype="PCM_16")
    data = train_files[2].read_bytes()
    train_files[2].write_bytes(data[: len(data) // 2])  # truncated: reads as a shorter file than prepared
    train_files[3].unlink()
    return folder / source.name


@pytest.mark.slow
def test_bad_files_at_training_time_are_skipped_counted_and_summarised(damaged_manifest, tmp_path):
    """NaN, silent, truncated and deleted files: skipped one by one (not their batch), counted by reason in the
    metric data/skipped_items and the end-of-run summary; no step is lost to a non-finite loss."""
    result = train(tmp_path, "run", "exp=dmae_tiny", f"datamodule.manifest={damaged_manifest}", "trainer.max_steps=5",
                   "callbacks.audio_preview=null", "+datamodule.drop_last=false")
    assert result.returncode == 0, result.stderr[-3000:]
    # 17 training items in 5 batches of at most 4: the 5 steps are epoch 0, which serves each bad file once
    summary = [line for line in result.stdout.splitlines() if line.startswith("skipped ")]
    assert summary == ["skipped 4 training items (non_finite=1, silent=1, unreadable=2) (metric data/skipped_items)"]
    counts = {"non_finite": 1, "silent": 1, "unreadable": 2}
    state = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert state["counters"]["skipped_nonfinite_steps"] == 0
    assert state["counters"]["skipped_data_items"] == sum(int(v) for v in counts.values())
    # the record of what it trained on lists the deleted file with the reason it has no SHA-256
    unhashed = [item for item in state["training_files"] if item["sha256"] is None]
    assert len(unhashed) == 1 and "FileNotFoundError" in unhashed[0]["error"]
    metrics = (tmp_path / "run/csv/version_0/metrics.csv").read_text()
    assert "data/skipped_items" in metrics
    output = result.stdout + result.stderr
    assert "skipping" in output and "truncated or changed since preparation" in output


class _Indexed(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, item: tuple[int, int]) -> int:
        return item[0] * 100 + item[1]


@pytest.mark.parametrize("workers", [0, 2])
def test_resumable_loader_continues_the_pass_and_refuses_other_settings(workers):
    from main.data.resumable import ResumableDataLoader
    from main.data.samplers import EpochShuffleSampler

    def loader(batch_size: int = 2) -> ResumableDataLoader:
        sampler = EpochShuffleSampler(10, seed=3)
        sampler.set_epoch(1)
        return ResumableDataLoader(_Indexed(), batch_size=batch_size, sampler=sampler, num_workers=workers)

    full = [b.tolist() for b in loader()]
    first = loader()
    iterator = iter(first)
    head = [next(iterator).tolist() for _ in range(2)]
    state = first.state_dict()  # after the 2 batches consumed, whatever the workers pre-loaded
    resumed = loader()
    resumed.load_state_dict(state)
    assert head + [b.tolist() for b in resumed] == full
    assert [next(iterator).tolist() for _ in range(3)] == full[2:] and first.state_dict() == {}  # a whole pass
    from main.config import ConfigError

    with pytest.raises(ConfigError, match="batch_size: 2 -> 5"):  # train.py prints ConfigErrors as one line
        loader(batch_size=5).load_state_dict(state)


@pytest.fixture(scope="module")
def preencoded(tmp_path_factory, tiny_diffae_config, text_encoder_path) -> dict[str, Any]:
    """A tiny DiffAE export and the pre-encoded latents + text embeddings of a small synthetic data set."""
    from main.data.latents import PreencodedStore
    from main.data.synthetic import generate_synthetic_dataset
    from main.models import build_diffae
    from main.preencode import preencode
    from tests.conftest import save_export

    tmp = tmp_path_factory.mktemp("preencoded")
    torch.manual_seed(0)
    save_export(build_diffae(**tiny_diffae_config), tmp / "diffae",
                {"kind": "diffae", "model": tiny_diffae_config, "sample_rate": 16000})
    manifest = generate_synthetic_dataset(tmp / "data", clips_per_species=2, duration_s=1.0, sample_rate=16000)
    preencode(manifest, tmp / "diffae.safetensors", tmp / "latents", text_encoder_path, 32, ("train", "valid"),
              min_samples=8192, dtype="float32", device="cpu")
    train_items = sum(item["split"] == "train" for item in PreencodedStore(tmp / "latents").items)
    return {"diffae": tmp / "diffae.safetensors", "latents": tmp / "latents", "train_items": train_items}


@pytest.mark.slow
def test_preencoded_diffgen_killed_mid_epoch_resumes_exactly(preencoded, tmp_path):
    """DiffGen on pre-encoded latents (shuffled, 2 workers, gradient accumulation, warm-up + cosine): killed right
    after a mid-epoch step and resumed from its periodic last.ckpt, it ends with the uninterrupted run's state and
    every item seen once per epoch."""
    per_step = 4 * 2  # batch 4 (the last batch of an epoch kept), 2 batches per optimizer step
    batches = -(-preencoded["train_items"] // 4)
    steps = 2 * -(-batches // 2)  # two epochs (an odd last batch is an optimizer step of its own)
    common = ["exp=diffgen_tiny_preencoded", f"model.autoencoder={preencoded['diffae']}",
              f"datamodule.preencoded={preencoded['latents']}", "datamodule.num_workers=2", "+datamodule.drop_last=false",
              "trainer.accumulate_grad_batches=2", "model.lr_warmup_steps=1", "model.lr_schedule=cosine",
              f"trainer.max_steps={steps}", "callbacks.checkpoint.every_n_train_steps=1",
              "callbacks.audio_preview.on_train_end=false"]
    straight = train(tmp_path, "straight", *common, BIRD_FAULT_ITEM_LOG=str(tmp_path / "straight.items"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    kill_at = 1  # mid-epoch 0: the epoch has more than one optimizer step
    assert preencoded["train_items"] > per_step
    killed = train(tmp_path, "killed", *common, BIRD_FAULT_KILL_AT_STEP=str(kill_at),
                   BIRD_FAULT_ITEM_LOG=str(tmp_path / "killed.items"))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    ckpt = tmp_path / "killed/checkpoints/last.ckpt"
    assert int(torch.load(ckpt, weights_only=True)["global_step"]) == kill_at
    resumed = train(tmp_path, "resumed", *common, f"+ckpt={ckpt}", BIRD_FAULT_ITEM_LOG=str(tmp_path / "resumed.items"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    effective = committed(read_log(tmp_path / "killed.items"), kill_at) + read_log(tmp_path / "resumed.items")
    reference = read_log(tmp_path / "straight.items")
    assert any(r["epoch"] == 0 and r["step"] >= kill_at for r in reference), "the kill must fall mid-epoch"
    assert key(effective) == key(reference)
    assert_each_item_once_per_epoch(effective, epochs=2, items=preencoded["train_items"])
    assert_same_state(tmp_path / "straight/checkpoints/last.ckpt", tmp_path / "resumed/checkpoints/last.ckpt")
