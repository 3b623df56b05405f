"""Streamed (LitData) data sets: writing, provenance, bad files, crops, workers, resume, the datamodule."""

from __future__ import annotations

import csv
import json
import multiprocessing
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import torch
from litdata import StreamingDataset

from main.data import shard as shard_cli
from main.data.datamodule import BirdSoundDataModule
import numpy as np

from main.data.dataset import AudioDataset, collate_audio
from main.data.manifest import read_manifest
from main.data.streaming import (
    StreamingAudioDataset,
    StreamingAudioLoader,
    parse_size,
    read_dataset_info,
    write_streaming_dataset,
)
from tests.data_helpers import CROP, SR, small_synthetic_manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 species x 4 clips x 1.5 s stereo FLAC at 16 kHz."""
    return small_synthetic_manifest(tmp_path_factory)


@pytest.fixture(scope="module")
def stream(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every split as int16 PCM, at most 3 clips per chunk."""
    out = tmp_path_factory.mktemp("stream")
    write_streaming_dataset(manifest, out, chunk_size=3)
    return out


def _dataset(folder: Path, split: str = "train", **kwargs: Any) -> StreamingAudioDataset:
    """A test-sized streamed dataset returning keys."""
    options = dict(sample_rate=SR, crop_length=CROP, with_key=True)
    return StreamingAudioDataset(folder, split, **{**options, **kwargs})


def _keys(batch: list[Any]) -> list[str]:
    """Collate to the list of keys (module level: picklable for workers)."""
    return [item["key"] for item in batch]


def _crops(batch: list[Any]) -> list[tuple[str, torch.Tensor]]:
    """Collate to (key, audio) pairs."""
    return [(item["key"], item["audio"]) for item in batch]


def test_write_layout_provenance_and_determinism(manifest: Path, stream: Path, tmp_path: Path) -> None:
    rows = read_manifest(manifest)
    info = read_dataset_info(stream)
    assert info["manifest"]["sha256"] and info["audio_format"] == "pcm16" and info["failed"] == {}
    for split, entry in info["splits"].items():
        expected = {r["id"]: r for r in rows if r["split"] == split}
        index = json.loads((stream / split / "index.json").read_text())
        assert entry["clips"] == len(expected) == sum(c["chunk_size"] for c in index["chunks"])
        assert entry["chunks"] == len(index["chunks"]) and max(c["chunk_size"] for c in index["chunks"]) <= 3
        dataset = StreamingAudioDataset(stream, split, SR, CROP)
        raws = [StreamingDataset.__getitem__(dataset, i) for i in range(len(dataset))]  # stored samples
        metas = [json.loads(raw["meta"]) for raw in raws]
        assert {m["id"] for m in metas} == set(expected)
        for raw, meta in zip(raws, metas):
            row = expected[meta["id"]]
            assert (meta["label"], meta["sci_name"], meta["file"]) == (row["label"], row["sci_name"], row["file"])
            assert raw["label"] == row["label"] and raw["audio"].dtype.name == "int16" and raw["sample_rate"] == SR
            assert meta["key"] == raw["key"] and meta["audio"]["frames"] == raw["audio"].shape[0]

    # same input, same options: byte-identical chunks (LitData's index differs only in updated_at)
    start_method = multiprocessing.get_start_method(allow_none=True)
    again = write_streaming_dataset(manifest, tmp_path / "again", chunk_size=3)
    # LitData's optimize sets the process-wide start method; writing restores it (else each later DataLoader
    # worker of the process starts through the fork server and re-imports its modules: seconds, every epoch)
    assert multiprocessing.get_start_method(allow_none=True) == start_method
    assert again.clips == {s: e["clips"] for s, e in info["splits"].items()}
    for path in sorted(stream.glob("*/*.bin")):
        assert (tmp_path / "again" / path.relative_to(stream)).read_bytes() == path.read_bytes()
    for path in sorted(stream.glob("*/index.json")):
        a, b = (json.loads(p.read_text()) for p in (path, tmp_path / "again" / path.relative_to(stream)))
        assert {**a, "updated_at": 0} == {**b, "updated_at": 0}
    limit = 3 * max(c["chunk_bytes"] for c in json.loads((stream / "train/index.json").read_text())["chunks"])
    small = write_streaming_dataset(manifest, tmp_path / "small", splits=["train"], chunk_bytes=limit, workers=2)
    assert small.clips == {"train": 25} and small.chunks["train"] > 2
    with pytest.raises(FileExistsError, match="dataset.json"):
        write_streaming_dataset(manifest, tmp_path / "small")


def test_bad_files_are_skipped_and_counted(manifest: Path, tmp_path: Path) -> None:
    rows = list(csv.DictReader(manifest.open()))
    valid = [r for r in rows if r["split"] == "valid"]
    corrupt = tmp_path / "corrupt.flac"
    corrupt.write_bytes(b"fLaC" + b"\x00garbage" * 50)
    valid[0]["file"], valid[1]["file"] = str(tmp_path / "gone.flac"), str(corrupt)  # absolute: outside the folder
    broken = manifest.parent / "broken.csv"  # next to the manifest: the other files resolve as before
    with broken.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(valid)
    report = write_streaming_dataset(broken, tmp_path / "out")
    assert report.clips == {"valid": 2} and report.failed == Counter(missing_file=1, unreadable=1)
    assert sorted(path for path, _, _ in report.failed_files) == sorted([str(corrupt), str(tmp_path / "gone.flac")])
    info = read_dataset_info(tmp_path / "out")
    assert info["failed"] == {"missing_file": 1, "unreadable": 1} and len(info["failed_files"]) == 2
    assert not (tmp_path / "out/.write-log").exists()
    assert shard_cli.main(["--manifest", str(broken), "--out", str(tmp_path / "cli"), "--quiet"]) == 1


def test_resampled_and_original_match_audio_dataset(manifest: Path, tmp_path: Path) -> None:
    rate = 24000
    write_streaming_dataset(manifest, tmp_path / "mono24k", splits=["valid"], sample_rate=rate, channels=1,
                            shuffle=False)
    write_streaming_dataset(manifest, tmp_path / "orig", splits=["valid"], audio_format="original", shuffle=False)
    reference = AudioDataset(manifest, "valid", rate, CROP, channels=1)
    stereo = AudioDataset(manifest, "valid", rate, CROP, channels=2)
    mono_items = list(_dataset(tmp_path / "mono24k", "valid", sample_rate=rate, channels=2))
    orig_items = list(_dataset(tmp_path / "orig", "valid", sample_rate=rate, channels=2))
    assert len(mono_items) == len(orig_items) == len(reference)
    for i, (mono, orig) in enumerate(zip(mono_items, orig_items)):
        assert mono is not None and orig is not None and mono["key"] == orig["key"]
        assert mono["audio"].shape == (2, CROP) and torch.equal(mono["audio"][0], mono["audio"][1])  # mono -> stereo
        torch.testing.assert_close(mono["audio"][0], reference[i]["audio"][0], atol=2e-4, rtol=0)  # 16-bit PCM
        torch.testing.assert_close(orig["audio"], stereo[i]["audio"], atol=1e-5, rtol=0)


def test_bad_samples_at_training_time_are_skipped_by_reason(stream: Path) -> None:
    dataset = _dataset(stream, silence_dbfs=-90.0)
    good = dataset[0]
    frames = 2 * CROP
    nan = np.zeros((frames, 2), dtype=np.float32)
    nan[5, 0] = np.nan
    raw = [
        {"key": "silent", "audio": np.zeros((frames, 2), dtype=np.int16), "sample_rate": SR},
        {"key": "nan", "audio": nan, "sample_rate": SR},
        {"key": "garbage", "audio": b"fLaC" + b"\x00garbage" * 50, "ext": "flac"},
    ]
    items = [dataset.make_item(r) for r in raw]
    assert [item["skip"] for item in items] == ["silent", "non_finite", "unreadable"]
    batch = collate_audio([good, *items], channels=2, crop_length=CROP)
    assert batch["audio"].shape == (1, 2, CROP) and int(batch["skipped"]) == 3
    assert batch["skipped_by_reason"] == {"silent": 1, "non_finite": 1, "unreadable": 1}
    assert _dataset(stream, silence_dbfs=None).make_item(raw[0])["audio"].abs().max() == 0  # null keeps silence


@pytest.mark.parametrize("workers", [0, 2])
def test_every_clip_once_per_epoch_and_order_changes(stream: Path, workers: int) -> None:
    loader = StreamingAudioLoader(_dataset(stream, shuffle=True, random_crop=True), batch_size=4,
                                  num_workers=workers, collate_fn=_keys)
    epochs = [[k for batch in loader for k in batch] for _ in range(2)]
    for keys in epochs:
        assert len(keys) == len(set(keys)) == 25
    assert epochs[0] != epochs[1] and sorted(epochs[0]) == sorted(epochs[1])
    again = StreamingAudioLoader(_dataset(stream, shuffle=True), batch_size=4, num_workers=workers, collate_fn=_keys)
    assert [k for batch in again for k in batch] == epochs[0]  # seeded: the same order again
    other = StreamingAudioLoader(_dataset(stream, shuffle=True, seed=1), batch_size=4, collate_fn=_keys)
    assert [k for batch in other for k in batch] != epochs[0]
    dropped = StreamingAudioLoader(_dataset(stream, shuffle=True), batch_size=4, num_workers=workers,
                                   drop_last=True, collate_fn=_keys)
    batches = list(dropped)
    assert len(batches) == len(dropped) and {len(b) for b in batches} == {4}


def test_crops_depend_on_seed_epoch_and_key_only(stream: Path) -> None:
    def crops(workers: int, epochs: int = 1) -> dict[str, torch.Tensor]:
        loader = StreamingAudioLoader(_dataset(stream, shuffle=True, random_crop=True), batch_size=3,
                                      num_workers=workers, collate_fn=_crops)
        for _ in range(epochs - 1):
            list(loader)
        return {key: audio for batch in loader for key, audio in batch}

    one, two, second_epoch = crops(0), crops(2), crops(0, epochs=2)
    assert one.keys() == two.keys() == second_epoch.keys()
    assert all(torch.equal(one[k], two[k]) for k in one)  # workers do not change crops
    assert sum(not torch.equal(one[k], second_epoch[k]) for k in one) > 20  # a new epoch draws new crops


def test_mid_epoch_state_dict_resumes_exactly(stream: Path) -> None:
    def loader() -> StreamingAudioLoader:
        return StreamingAudioLoader(_dataset(stream, shuffle=True, random_crop=True), batch_size=3, num_workers=2,
                                    drop_last=True, collate_fn=_crops)

    full = loader()
    reference = list(full) + list(full)  # two epochs
    stopped = loader()
    iterator = iter(stopped)
    seen = [next(iterator) for _ in range(3)]
    state = stopped.state_dict()
    del iterator
    resumed = loader()
    resumed.load_state_dict(state)
    seen += list(resumed) + list(resumed)
    assert [[k for k, _ in b] for b in seen] == [[k for k, _ in b] for b in reference]
    assert all(torch.equal(a, b) for x, y in zip(seen, reference) for (_, a), (_, b) in zip(x, y))


def test_datamodule_with_stream(manifest: Path, stream: Path, tmp_path: Path) -> None:
    dm = BirdSoundDataModule(manifest=str(manifest), stream=str(stream), sample_rate=SR, crop_length=CROP,
                             batch_size=4, num_workers=0, with_text=True)
    dm.setup("fit")
    assert isinstance(dm.datasets["train"], StreamingAudioDataset) and dm.datasets["train"].num_clips == 25
    train = dm.train_dataloader()
    assert isinstance(train, StreamingAudioLoader)
    batches = list(train)
    assert len(batches) == len(train) == 25 // 4
    for batch in batches:
        assert batch["audio"].shape == (4, 2, CROP) and len(batch["text"]) == 4 and int(batch["skipped"]) == 0
        assert all(";" in text for text in batch["text"])
    val = list(dm.val_dataloader())
    assert sum(b["audio"].shape[0] for b in val) == 4 and val[0]["audio"].shape[1:] == (2, CROP)
    test = dm.test_dataloader()  # the test split still comes from the manifest
    assert isinstance(test.dataset, AudioDataset) and next(iter(test))["audio"].shape[1:] == (2, CROP)
    with pytest.raises(ValueError, match="stratified"):
        BirdSoundDataModule(manifest=str(manifest), stream=str(stream), stratified=True).setup("fit")
    partial = tmp_path / "partial"
    shutil.copytree(stream / "valid", partial / "valid")
    with pytest.raises(FileNotFoundError, match=r"train/index\.json"):
        BirdSoundDataModule(manifest=str(manifest), stream=str(partial)).setup("fit")


def test_cli_and_sizes(manifest: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_size("256M") == 256 * 2**20 and parse_size("1.5k") == 1536 and parse_size("1000") == 1000
    with pytest.raises(ValueError):
        parse_size("lots")
    out = tmp_path / "cli"
    args = ["--manifest", str(manifest), "--out", str(out), "--splits", "valid", "--chunk-bytes", "64K",
            "--sample-rate", "16000", "--channels", "1", "--quiet"]
    assert shard_cli.main(args) == 0
    assert "valid: 4 clips" in capsys.readouterr().out
    info = read_dataset_info(out)
    assert info["splits"]["valid"]["clips"] == 4 and info["channels"] == 1 and info["chunk_bytes"] == 65536
    assert shard_cli.main(args) == 2 and "exists" in capsys.readouterr().err
    assert shard_cli.main(args + ["--overwrite", "--max-clips-per-chunk", "1"]) == 0
    assert read_dataset_info(out)["splits"]["valid"]["chunks"] == 4
    assert shard_cli.main(["--manifest", str(manifest), "--out", "s3://bucket/x", "--quiet"]) == 2
    for removed in ("--max-shard-bytes", "--max-clips-per-shard"):  # the old names of --chunk-bytes, -per-chunk
        with pytest.raises(SystemExit):
            shard_cli.main(["--manifest", str(manifest), "--out", str(out), removed, "1"])
