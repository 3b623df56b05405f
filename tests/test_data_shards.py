"""Tar shards: writing, WebDataset layout, rank/worker splitting, epochs, BirdSoundDataModule(shards=...)."""

from __future__ import annotations

import functools
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from main.data import shard as shard_cli
from main.data.datamodule import BirdSoundDataModule
from main.data.dataset import AudioDataset, collate_audio
from main.data.manifest import read_manifest
from main.data.shards import (
    ShardedAudioDataset,
    ShardedDataLoader,
    assign_shards,
    parse_size,
    read_index,
    worker_quotas,
    write_shards,
)
from tests.data_helpers import CROP, SR, small_synthetic_manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 species x 4 clips x 1.5 s stereo FLAC at 16 kHz."""
    return small_synthetic_manifest(tmp_path_factory)


@pytest.fixture(scope="module")
def shards(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every split re-encoded as FLAC, at most 3 clips per shard."""
    out = tmp_path_factory.mktemp("shards")
    write_shards(manifest, out, max_clips_per_shard=3)
    return out


def _dataset(folder: Path, split: str = "train", **kwargs: Any) -> ShardedAudioDataset:
    """A test-sized sharded dataset returning keys."""
    options = dict(sample_rate=SR, crop_length=CROP, with_key=True)
    return ShardedAudioDataset(folder, split, **{**options, **kwargs})


def _members(path: Path) -> list[str]:
    """Member names of a tar, in order."""
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_write_shards_layout_index_and_determinism(manifest: Path, shards: Path, tmp_path: Path) -> None:
    rows = read_manifest(manifest)
    index = read_index(shards)
    assert index["sample_rate"] is None and index["audio_format"] == "flac"
    seen: dict[str, dict[str, Any]] = {}
    for split, entry in index["splits"].items():
        expected = [r for r in rows if r["split"] == split]
        assert entry["clips"] == len(expected) == sum(s["clips"] for s in entry["shards"])
        paths = [f"{split}/shard-{i:06d}.tar" for i in range(len(entry["shards"]))]
        assert [s["path"] for s in entry["shards"]] == paths
        for shard in entry["shards"]:
            path = shards / shard["path"]
            assert shard["clips"] <= 3 and shard["bytes"] == path.stat().st_size
            names = _members(path)
            keys = [n.split(".")[0] for n in names[::2]]
            assert names == [name for key in keys for name in (f"{key}.flac", f"{key}.json")]
            with tarfile.open(path) as tar:
                for key in keys:
                    meta = json.loads(tar.extractfile(f"{key}.json").read())  # type: ignore[union-attr]
                    seen[meta["id"]] = meta
                    assert meta["key"] == key and meta["split"] == split and meta["audio"]["sample_rate"] == SR
    by_id = {r["id"]: r for r in rows}
    assert set(seen) == set(by_id)
    for xc_id, meta in seen.items():
        assert (meta["label"], meta["sci_name"], meta["file"]) == (by_id[xc_id]["label"], by_id[xc_id]["sci_name"],
                                                                   by_id[xc_id]["file"])

    # same input, same options: byte-identical shards; the byte limit starts new shards
    again = write_shards(manifest, tmp_path / "again", max_clips_per_shard=3)
    assert again.clips == {s: e["clips"] for s, e in index["splits"].items()}
    for path in sorted(shards.glob("*/shard-*.tar")):
        assert (tmp_path / "again" / path.relative_to(shards)).read_bytes() == path.read_bytes()
    limit = 2 * max(s["bytes"] for e in index["splits"].values() for s in e["shards"]) // 3
    small = write_shards(manifest, tmp_path / "small", splits=["train"], max_clips_per_shard=100,
                         max_shard_bytes=limit)
    sizes = [s["bytes"] for s in read_index(tmp_path / "small")["splits"]["train"]["shards"]]
    assert small.shards["train"] == len(sizes) > 1 and max(sizes) <= limit
    with pytest.raises(FileExistsError):
        write_shards(manifest, tmp_path / "small")


def test_resampled_and_original_shards_match_audio_dataset(manifest: Path, tmp_path: Path) -> None:
    rate = 24000
    write_shards(manifest, tmp_path / "mono24k", splits=["valid"], sample_rate=rate, channels=1, shuffle=False)
    write_shards(manifest, tmp_path / "orig", splits=["valid"], audio_format="original", shuffle=False)
    reference = AudioDataset(manifest, "valid", rate, CROP, channels=1)
    stereo = AudioDataset(manifest, "valid", rate, CROP, channels=2)
    mono_items = list(_dataset(tmp_path / "mono24k", "valid", sample_rate=rate, channels=2))
    orig_items = list(_dataset(tmp_path / "orig", "valid", sample_rate=rate, channels=2))
    assert len(mono_items) == len(orig_items) == len(reference)
    for i, (mono, orig) in enumerate(zip(mono_items, orig_items)):
        assert mono is not None and orig is not None and mono["key"] == orig["key"]
        assert mono["audio"].shape == (2, CROP) and torch.equal(mono["audio"][0], mono["audio"][1])  # mono -> stereo
        torch.testing.assert_close(mono["audio"][0], reference[i]["audio"][0], atol=2e-4, rtol=0)  # 16-bit FLAC
        torch.testing.assert_close(orig["audio"], stereo[i]["audio"], atol=1e-5, rtol=0)


def test_assignment_covers_every_shard_once_and_balances_ranks() -> None:
    counts = [3] * 8 + [1]
    for world, workers in [(1, 1), (2, 2), (3, 1), (4, 3)]:
        plan = assign_shards(counts, world, workers, epoch=5, seed=1)
        flat = [s for per_rank in plan for per_worker in per_rank for s in per_worker]
        assert sorted(flat) == list(range(len(counts)))  # each shard read by exactly one (rank, worker)
        pad, drop = worker_quotas(counts, plan, "pad"), worker_quotas(counts, plan, "drop")
        assert sum(pad) * world >= sum(counts) >= sum(drop) * world
    assert assign_shards(counts, 2, 2, 0) == assign_shards(counts, 2, 2, 0) != assign_shards(counts, 2, 2, 1)


@pytest.mark.parametrize("world,workers,uneven", [(2, 2, "pad"), (3, 1, "pad"), (2, 2, "drop")])
def test_every_clip_once_per_epoch_over_ranks_and_workers(shards: Path, world: int, workers: int, uneven: str) -> None:
    dataset = _dataset(shards, random_crop=True, shuffle=True, uneven=uneven)
    all_keys = {item["key"] for item in _dataset(shards)}
    assert len(all_keys) == dataset.num_clips == 25
    for epoch in (0, 1):
        per_rank: list[int] = []
        keys: Counter[str] = Counter()
        quotas = dataset.plan(world, workers, epoch)[1]
        for rank in range(world):
            total = 0
            for worker in range(workers):
                items = list(dataset.iter_slot(rank, world, worker, workers, epoch))
                assert len(items) == quotas[worker]  # same per worker index on every rank: same batch count
                keys.update(item["key"] for item in items)
                total += len(items)
            per_rank.append(total)
        assert len(set(per_rank)) == 1 and per_rank[0] == dataset.samples_per_rank(world, workers, epoch)
        if uneven == "pad":
            assert set(keys) == all_keys  # every clip at least once; extra reads only pad short ranks
            assert sum(keys.values()) - len(all_keys) == world * per_rank[0] - dataset.num_clips
        else:
            assert set(keys) <= all_keys and max(keys.values()) == 1
            assert len(keys) == world * per_rank[0] > dataset.num_clips - world * workers * 3


def test_exactly_once_when_shards_divide_evenly(manifest: Path, tmp_path: Path) -> None:
    write_shards(manifest, tmp_path / "single", splits=["train"], max_clips_per_shard=1)
    dataset = _dataset(tmp_path / "single", shuffle=True)
    keys = [item["key"] for rank in range(5) for item in dataset.iter_slot(rank, 5, 0, 1, epoch=3)]
    assert len(keys) == len(set(keys)) == 25


def test_order_changes_across_epochs_and_is_deterministic(shards: Path) -> None:
    def run(seed: int, epoch: int) -> tuple[list[str], list[torch.Tensor]]:
        dataset = _dataset(shards, random_crop=True, shuffle=True, shuffle_buffer=5, seed=seed)
        dataset.set_epoch(epoch)
        items = list(dataset)
        return [i["key"] for i in items], [i["audio"] for i in items]

    keys0, audio0 = run(0, 0)
    keys0b, audio0b = run(0, 0)
    keys1, _ = run(0, 1)
    assert keys0 == keys0b and all(torch.equal(a, b) for a, b in zip(audio0, audio0b))
    assert sorted(keys0) == sorted(keys1) and keys0 != keys1
    assert run(1, 0)[0] != keys0
    dataset = _dataset(shards, shuffle=True)  # without set_epoch each pass is the next epoch
    first, second = [i["key"] for i in dataset], [i["key"] for i in dataset]
    assert dataset.epoch == 1 and first == [i["key"] for i in dataset.iter_slot(0, 1, 0, 1, 0)] != second


def _keys(batch: list[Any]) -> list[str]:
    """Collate to the list of keys (module level: picklable for workers)."""
    return [item["key"] for item in batch]


def test_dataloader_workers_split_shards_and_see_new_epochs(shards: Path) -> None:
    dataset = _dataset(shards, shuffle=True)
    loader = ShardedDataLoader(dataset, batch_size=4, num_workers=2, persistent_workers=True, collate_fn=_keys)

    def expected(epoch: int) -> list[list[str]]:
        """Batches as the DataLoader interleaves them: worker 0's first, worker 1's first, worker 0's second..."""
        per_worker = [[i["key"] for i in dataset.iter_slot(0, 1, w, 2, epoch)] for w in range(2)]
        batches = [[keys[j:j + 4] for j in range(0, len(keys), 4)] for keys in per_worker]
        return [b[j] for j in range(max(map(len, batches))) for b in batches if j < len(b)]

    for epoch in (0, 1):  # persistent workers: epoch 1 must reach them through the shared counter
        batches = list(loader)
        assert batches == expected(epoch)
        assert sorted(k for b in batches for k in b) == sorted({k for b in batches for k in b})
    assert expected(0) != expected(1)


def test_datamodule_with_shards(manifest: Path, shards: Path) -> None:
    dm = BirdSoundDataModule(manifest=str(manifest), shards=str(shards), sample_rate=SR, crop_length=CROP,
                             batch_size=4, num_workers=0, with_text=True, shuffle_buffer=8)
    dm.setup("fit")
    assert isinstance(dm.datasets["train"], ShardedAudioDataset)
    train = dm.train_dataloader()
    assert isinstance(train, ShardedDataLoader)
    batches = list(train)
    assert len(batches) == 25 // 4
    for batch in batches:
        assert batch["audio"].shape == (4, 2, CROP) and len(batch["text"]) == 4 and int(batch["skipped"]) == 0
        assert all(";" in text for text in batch["text"])
    val = list(dm.val_dataloader())
    assert sum(b["audio"].shape[0] for b in val) == 4 and val[0]["audio"].shape[1:] == (2, CROP)
    dm.trainer = SimpleNamespace(current_epoch=3)  # type: ignore[assignment]
    next(iter(train))
    assert dm.datasets["train"].epoch == 3
    test = dm.test_dataloader()  # the test split still comes from the manifest
    assert isinstance(test.dataset, AudioDataset) and next(iter(test))["audio"].shape[1:] == (2, CROP)
    with pytest.raises(ValueError, match="stratified"):
        BirdSoundDataModule(manifest=str(manifest), shards=str(shards), stratified=True).setup("fit")
    with pytest.raises(FileNotFoundError, match="index.json"):
        BirdSoundDataModule(manifest=str(manifest), shards=str(shards / "train")).setup("fit")


def test_corrupt_member_and_truncated_shard_are_skipped_and_counted(shards: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(shards, broken)
    first = broken / "train" / "shard-000000.tar"
    with tarfile.open(first) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    bad_key = members[0][0].name.split(".")[0]
    with tarfile.open(first, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name.endswith(".flac") and member.name.startswith(bad_key):
                data = b"fLaC" + b"\x00garbage" * 50
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    second = broken / "train" / "shard-000001.tar"
    second.write_bytes(second.read_bytes()[:1500])  # cut inside the first member

    items = list(_dataset(broken))
    assert len(items) == 25  # every shard still yields its indexed count: ranks stay balanced
    nones = sum(item is None for item in items)
    assert nones == 1 + 3
    assert bad_key not in {item["key"] for item in items if item is not None}
    batch = collate_audio(items, channels=2, crop_length=CROP, with_text=False)
    assert int(batch["skipped"]) == nones and batch["audio"].shape == (25 - nones, 2, CROP)


def test_cli_and_sizes(manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_size("256M") == 256 * 2**20 and parse_size("1.5k") == 1536 and parse_size("1000") == 1000
    with pytest.raises(ValueError):
        parse_size("lots")
    out = tmp_path / "cli"
    args = ["--manifest", str(manifest), "--out", str(out), "--splits", "valid", "--max-shard-bytes", "64K",
            "--sample-rate", "16000", "--channels", "1", "--quiet"]
    assert shard_cli.main(args) == 0
    assert "valid: 4 clips" in capsys.readouterr().out
    assert read_index(out)["splits"]["valid"]["clips"] == 4 and read_index(out)["channels"] == 1
    assert shard_cli.main(args) == 2 and "exists" in capsys.readouterr().err
    assert shard_cli.main(args + ["--overwrite"]) == 0


class _Probe(pl.LightningModule):
    """Keeps the training batches it sees and counts validation batches."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[torch.Tensor] = []
        self.val_batches = 0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.batches.append(batch["audio"].clone())
        return (self.weight * batch["audio"].mean()).sum()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.val_batches += 1

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_fit_follows_the_trainer_epoch(manifest: Path, shards: Path) -> None:
    module = BirdSoundDataModule(str(manifest), sample_rate=SR, crop_length=CROP, batch_size=4, num_workers=0,
                                 with_text=True, shards=str(shards))
    probe = _Probe()
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=2, num_sanity_val_steps=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(probe, datamodule=module)
    assert [tuple(b.shape) for b in probe.batches] == [(4, 2, CROP)] * 4 and probe.val_batches == 2
    expected = []
    for epoch in (0, 1):
        dataset = ShardedAudioDataset(shards, "train", SR, CROP, random_crop=True, with_text=True, shuffle=True)
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=4, collate_fn=functools.partial(collate_audio, with_text=True))
        expected += [b["audio"] for _, b in zip(range(2), loader)]
    assert all(torch.equal(a, b) for a, b in zip(probe.batches, expected))
    assert not torch.equal(probe.batches[0], probe.batches[2])
