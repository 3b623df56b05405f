"""AudioDataset, collate_audio, samplers and BirdSoundDataModule."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import soundfile as sf
import torch
import torchaudio
from torch.utils.data import DataLoader

from main.data.audio import to_channels
from main.data.datamodule import BirdSoundDataModule
from main.data.dataset import AudioDataset, collate_audio
from main.data.samplers import EpochShuffleSampler, EpochWeightedSampler, stratified_weights
from main.data.manifest import prepare_manifest, read_manifest
from main.data.synthetic import default_cache_dir
from tests.data_helpers import CROP, SR, small_synthetic_manifest


@pytest.fixture(scope="module")
def synthetic_manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 species x 4 clips x 1.5 s at 16 kHz."""
    return small_synthetic_manifest(tmp_path_factory)


def _noise(seconds: float, rate: int, channels: int, seed: int) -> np.ndarray:
    """Band-limited-ish noise [frames, channels] (smoothed so resampling is well behaved)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((int(seconds * rate), channels))
    kernel = np.hanning(9)
    x = np.stack([np.convolve(x[:, c], kernel / kernel.sum(), "same") for c in range(channels)], 1)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


@pytest.fixture()
def mixed_manifest(tmp_path: Path) -> Path:
    """Mono 16 kHz, stereo 48 kHz, 44.1 kHz, 4-channel and MP3 files, all labelled and in 'train'."""
    files = {
        "XC1.wav": (_noise(2.0, SR, 1, 1), SR, {}),
        "XC2.flac": (_noise(2.0, 48000, 2, 2), 48000, {}),
        "XC3.flac": (_noise(2.0, 44100, 2, 3), 44100, {}),
        "XC4.wav": (_noise(0.2, SR, 4, 4), SR, {}),  # shorter than the crop
    }
    if "MP3" in sf.available_formats():
        files["XC5.mp3"] = (_noise(2.0, 32000, 2, 5), 32000, {})
    records = []
    for name, (audio, rate, _) in files.items():
        sf.write(tmp_path / name, audio, rate)
        records.append({"id": name[2:-len(Path(name).suffix)], "gen": "Testus", "sp": f"sp{len(records) % 2}",
                        "en": "Tester", "cnt": "Nowhere", "q": "A", "type": "song", "also": []})
    (tmp_path / "meta.json").write_text(json.dumps({"recordings": records}))
    report = prepare_manifest(tmp_path, fractions=(1.0, 0.0, 0.0))
    assert report.ok == len(files)
    return report.manifest_path  # type: ignore[return-value]


# ----------------------------------------------------------------------------- dataset


def test_items_have_the_right_shape_and_text(mixed_manifest: Path) -> None:
    dataset = AudioDataset(mixed_manifest, "train", SR, CROP, channels=2, random_crop=True, with_text=True)
    assert len(dataset) >= 4
    for index in range(len(dataset)):
        item = dataset[index]
        assert item is not None and item["audio"].shape == (2, CROP) and item["audio"].dtype == torch.float32
        assert item["text"] == dataset.labels[index]
    no_text = AudioDataset(mixed_manifest, "train", SR, CROP)[0]
    assert no_text is not None and set(no_text) == {"audio", "index"} and no_text["index"] == 0


def test_mono_is_duplicated_short_clips_are_padded(mixed_manifest: Path) -> None:
    dataset = AudioDataset(mixed_manifest, None, SR, CROP, channels=2)
    by_name = {Path(p).name: i for i, p in enumerate(dataset.paths)}
    mono = dataset[by_name["XC1.wav"]]["audio"]
    assert torch.equal(mono[0], mono[1])
    short = dataset[by_name["XC4.wav"]]["audio"]
    source, _ = sf.read(Path(mixed_manifest).parent / "XC4.wav", dtype="float32")
    assert torch.allclose(short[:, :3200], torch.from_numpy(source[:, :2].T))  # first two of 4 channels
    assert torch.count_nonzero(short[:, 3200:]) == 0


@pytest.mark.parametrize("name", ["XC2.flac", "XC3.flac"])
def test_resampled_random_crop_matches_full_resampling(mixed_manifest: Path, name: str) -> None:
    dataset = AudioDataset(mixed_manifest, None, SR, CROP, random_crop=True, seed=3)
    index = [Path(p).name for p in dataset.paths].index(name)
    source, rate = sf.read(Path(mixed_manifest).parent / name, dtype="float32")
    full = torchaudio.functional.resample(torch.from_numpy(source.T), rate, SR)
    unit = SR // math.gcd(rate, SR)  # crops start on the grid where both rates meet whole samples
    starts = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        start = dataset.crop_start(source.shape[0] * SR // rate, index, epoch) // unit * unit
        starts.add(start)
        assert torch.allclose(dataset[index]["audio"], full[:, start:start + CROP], atol=1e-5), epoch
    assert len(starts) == 4


def test_mp3_crop_matches_a_full_decode(mixed_manifest: Path) -> None:
    if "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write MP3")
    dataset = AudioDataset(mixed_manifest, None, 32000, CROP, random_crop=True, seed=1)
    index = [Path(p).name for p in dataset.paths].index("XC5.mp3")
    full, _ = sf.read(Path(mixed_manifest).parent / "XC5.mp3", dtype="float32")
    full_t = torch.from_numpy(full.T)
    for epoch in range(3):
        start = dataset.crop_start(full.shape[0], index, epoch)
        assert start > 0
        crop = dataset[(index, epoch)]["audio"]
        assert torch.allclose(crop, full_t[:, start:start + CROP], atol=1e-5)


def test_crops_are_seeded_by_seed_epoch_and_index(synthetic_manifest: Path) -> None:
    dataset = AudioDataset(synthetic_manifest, "train", SR, CROP, random_crop=True, seed=5)
    first = dataset[(2, 0)]["audio"]
    assert torch.equal(first, dataset[(2, 0)]["audio"])
    assert not torch.equal(first, dataset[(2, 1)]["audio"])
    dataset.set_epoch(1)
    assert torch.equal(dataset[2]["audio"], dataset[(2, 1)]["audio"])
    other_seed = AudioDataset(synthetic_manifest, "train", SR, CROP, random_crop=True, seed=6)
    assert not torch.equal(first, other_seed[(2, 0)]["audio"])
    evaluation = AudioDataset(synthetic_manifest, "train", SR, CROP, random_crop=False)
    source, _ = sf.read(evaluation.paths[2], dtype="float32")
    assert torch.allclose(evaluation[2]["audio"], torch.from_numpy(source[:CROP].T))


def test_channel_conversion() -> None:
    x = torch.arange(12.0).reshape(3, 4)
    assert torch.equal(to_channels(x, 2), x[:2])
    assert torch.equal(to_channels(x, 1), x.mean(0, keepdim=True))
    assert torch.equal(to_channels(x[:1], 2), x[:1].repeat(2, 1))


# ----------------------------------------------------------------------------- failures and collate


def test_deleted_file_is_skipped_and_counted(synthetic_manifest: Path, tmp_path: Path, caplog: Any) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(synthetic_manifest.parent, folder)
    manifest = folder / synthetic_manifest.name
    dataset = AudioDataset(manifest, "train", SR, CROP, with_text=True)
    Path(dataset.paths[1]).unlink()
    loader = DataLoader(dataset, batch_size=4, collate_fn=collate_audio)
    batches = list(loader)
    assert sum(int(b["skipped"]) for b in batches) == 1
    assert sum(b["audio"].shape[0] for b in batches) == len(dataset) - 1
    assert batches[0]["audio"].shape == (3, 2, CROP) and len(batches[0]["text"]) == 3
    list(loader)  # a second pass warns no more
    assert sum("skipping" in r.getMessage() for r in caplog.records) == 1


def test_corrupt_file_at_read_time(synthetic_manifest: Path, tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(synthetic_manifest.parent, folder)
    dataset = AudioDataset(folder / synthetic_manifest.name, "train", SR, CROP)
    Path(dataset.paths[0]).write_bytes(b"garbage" * 10)
    Path(dataset.paths[1]).write_bytes(b"")
    assert dataset[0] == {"skip": "unreadable", "index": 0} and dataset[1] == {"skip": "unreadable", "index": 1}
    assert "audio" in dataset[2]


def test_file_decoding_to_nan_is_skipped_and_counted(synthetic_manifest: Path, tmp_path: Path) -> None:
    """A float WAV holding NaN/inf decodes without error; it is skipped like an unreadable file, so it never
    reaches a batch (where it would make the loss non-finite and throw away the whole batch)."""
    import soundfile as sf

    folder = tmp_path / "copy"
    shutil.copytree(synthetic_manifest.parent, folder)
    dataset = AudioDataset(folder / synthetic_manifest.name, "train", SR, CROP)
    for index in (0, 1):
        bad = np.zeros((dataset.frames[index] or SR, 2), dtype=np.float32)  # the prepared length: not "truncated"
        bad[::400, 0], bad[200::400, 1] = np.nan, np.inf
        Path(dataset.paths[index]).unlink()
        dataset.paths[index] = str(Path(dataset.paths[index]).with_suffix(".wav"))
        sf.write(dataset.paths[index], bad, SR, subtype="FLOAT")
    batch = collate_audio([dataset[i] for i in range(4)], crop_length=CROP)
    assert int(batch["skipped"]) == 2 and batch["audio"].shape[0] == 2 and torch.isfinite(batch["audio"]).all()
    assert batch["skipped_by_reason"] == {"non_finite": 2} and batch["items"].tolist() == [0, 1, 2, 3]


def test_collate_audio() -> None:
    item = {"audio": torch.ones(2, 16), "text": "a"}
    batch = collate_audio([item, None, item])
    assert batch["audio"].shape == (2, 2, 16) and batch["text"] == ["a", "a"] and int(batch["skipped"]) == 1
    empty = collate_audio([None, None], channels=2, crop_length=16, with_text=True)
    assert empty["audio"].shape == (0, 2, 16) and empty["text"] == [] and int(empty["skipped"]) == 2
    assert "text" not in collate_audio([{"audio": torch.ones(2, 16)}])


# ----------------------------------------------------------------------------- samplers


def test_shuffle_sampler_is_seeded_by_epoch() -> None:
    sampler = EpochShuffleSampler(20, seed=1)
    sampler.set_epoch(3)
    a = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == a and all(epoch == 3 for _, epoch in a)
    assert sorted(i for i, _ in a) == list(range(20))
    sampler.set_epoch(4)
    assert [i for i, _ in sampler] != [i for i, _ in a]
    auto = EpochShuffleSampler(20, seed=1)
    assert [e for _, e in list(auto)[:1] + list(auto)[:1]] == [0, 1]  # advances without set_epoch


def test_weighted_sampler_balances_species() -> None:
    species = ["a"] * 90 + ["b"] * 10
    weights = stratified_weights(species)
    assert sum(weights) == pytest.approx(1.0)
    assert weights[0] == pytest.approx(1 / (90 * 2)) and weights[-1] == pytest.approx(1 / (10 * 2))
    sampler = EpochWeightedSampler(weights, 2000, seed=0)
    picks = [species[i] for i, _ in sampler]
    assert 0.4 < picks.count("b") / len(picks) < 0.6
    sampler.set_epoch(0)
    assert [species[i] for i, _ in sampler] == picks
    with pytest.raises(ValueError, match="weights"):
        EpochWeightedSampler([0.0, 0.0])


def test_crops_do_not_depend_on_worker_count(synthetic_manifest: Path) -> None:
    def batches(workers: int) -> list[torch.Tensor]:
        module = BirdSoundDataModule(str(synthetic_manifest), sample_rate=SR, crop_length=CROP, batch_size=4,
                                     num_workers=workers, persistent_workers=False, seed=2)
        module.setup("fit")
        loader = module.train_dataloader()
        loader.sampler.set_epoch(1)
        return [b["audio"] for b in loader]

    serial, parallel = batches(0), batches(2)
    assert len(serial) == len(parallel) > 0
    assert all(torch.equal(a, b) for a, b in zip(serial, parallel))


# ----------------------------------------------------------------------------- data module


def test_datamodule_batches(mixed_manifest: Path) -> None:
    module = BirdSoundDataModule(str(mixed_manifest), sample_rate=SR, crop_length=CROP, batch_size=2,
                                 num_workers=0, with_text=True, val_split="train", stratified=True)
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["audio"].shape == (2, 2, CROP) and len(batch["text"]) == 2 and int(batch["skipped"]) == 0
    val = next(iter(module.val_dataloader()))
    assert val["audio"].shape[1:] == (2, CROP)
    assert module.species == ["Testus sp0", "Testus sp1"]
    assert module.num_train_clips == len(read_manifest(mixed_manifest))


def test_datamodule_errors_name_the_setting(synthetic_manifest: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="manifest"):
        BirdSoundDataModule(str(tmp_path / "missing.csv"), num_workers=0).setup("fit")
    with pytest.raises(ValueError, match="crop_length"):
        BirdSoundDataModule(str(synthetic_manifest), crop_length=0, num_workers=0).setup("fit")
    with pytest.raises(ValueError, match="val_split"):
        BirdSoundDataModule(str(synthetic_manifest), val_split="nope", batch_size=2, num_workers=0).setup("fit")
    with pytest.raises(ValueError, match="batch_size"):
        BirdSoundDataModule(str(synthetic_manifest), batch_size=1000, num_workers=0).setup("fit")


def test_default_synthetic_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIRD_DIFFUSION_CACHE", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache" / "synthetic"
    module = BirdSoundDataModule(sample_rate=SR, crop_length=CROP, batch_size=4, num_workers=0,
                                 synthetic={"clips_per_species": 3, "num_species": 8, "duration_s": 1.0})
    module.prepare_data()
    assert module.manifest_path.is_file()
    assert str(module.manifest_path).startswith(str(tmp_path / "env-cache" / "synthetic"))
    assert len(module.species) == 8
    assert module.num_train_clips == len(module.labels("train")) >= 8
    assert all(label.split("; ")[0] in module.species for label in module.labels("valid"))
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert batch["audio"].shape == (4, 2, CROP)
    explicit = BirdSoundDataModule(cache_dir=str(tmp_path / "explicit"), sample_rate=SR, crop_length=CROP,
                                   synthetic={"clips_per_species": 3, "num_species": 8, "duration_s": 1.0})
    assert str(explicit.manifest_path).startswith(str(tmp_path / "explicit"))
    with pytest.raises(ValueError, match="unknown synthetic data option"):
        BirdSoundDataModule(synthetic={"colour": "red"}).manifest_path


class _Probe(pl.LightningModule):
    """Keeps the training batches it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.batches: list[torch.Tensor] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        self.batches.append(batch["audio"].clone())
        return (self.weight * batch["audio"].mean()).sum()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_sets_the_sampler_epoch(synthetic_manifest: Path) -> None:
    module = BirdSoundDataModule(str(synthetic_manifest), sample_rate=SR, crop_length=CROP, batch_size=4,
                                 num_workers=0, with_text=True)
    probe = _Probe()
    trainer = pl.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(probe, datamodule=module)
    assert [tuple(b.shape) for b in probe.batches] == [(4, 2, CROP)] * 4
    expected = []
    loader = module.train_dataloader()
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        expected += [b["audio"] for _, b in zip(range(2), loader)]
    assert all(torch.equal(a, b) for a, b in zip(probe.batches, expected))
    assert not torch.equal(probe.batches[0], probe.batches[2])
