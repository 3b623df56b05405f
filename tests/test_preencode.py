"""Pre-encoded latents and cached text embeddings give DiffGen the same training signal as on-the-fly encoding."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from main.data.audio import load_recording
from main.data.datamodule import BirdSoundDataModule
from main.data.latents import LatentDataModule, LatentDataset, PreencodedStore, collate_latents
from main.data.synthetic import generate_synthetic_dataset
from main.models import build_diffae
from main.modules import DiffGen
from main.preencode import preencode
from main.text import FrozenTextEncoder
from tests.conftest import save_export

CROP = 8192  # one clip is exactly one crop at 16 kHz, so cropping in latent or audio space is the same


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_diffae_config, text_encoder_path):
    tmp = tmp_path_factory.mktemp("preencode")
    torch.manual_seed(0)
    diffae = build_diffae(**tiny_diffae_config)
    save_export(diffae, tmp / "diffae", {"kind": "diffae", "model": tiny_diffae_config, "sample_rate": 16000})
    manifest = generate_synthetic_dataset(tmp / "data", clips_per_species=2, duration_s=CROP / 16000,
                                          sample_rate=16000)
    out = {}
    for dtype in ("float32", "float16"):
        out[dtype] = tmp / f"pre_{dtype}"
        preencode(manifest, tmp / "diffae.safetensors", out[dtype], text_encoder_path, 32, ("train", "valid"),
                  min_samples=CROP, dtype=dtype, device="cpu")
    return {"tmp": tmp, "manifest": manifest, "diffae": diffae, "out": out}


def test_latents_and_embeddings_equal_on_the_fly_encoding(setup, text_encoder_path):
    store = PreencodedStore(setup["out"]["float32"])
    assert store.meta["num_items"] == len(store.items) > 0 and not store.meta["failed"]
    text = FrozenTextEncoder(text_encoder_path, 32)
    item = store.items[0]
    audio = load_recording(setup["manifest"].parent / item["file"], 16000, 2)
    with torch.no_grad():
        expected = setup["diffae"].encoder(audio[None, :, :CROP])[0]
    torch.testing.assert_close(store.latent(item["offset"], item["frames"]), expected, rtol=0, atol=1e-6)
    embedding, mask = store.text(item["label"])
    ref_embedding, ref_mask = text([store.labels[item["label"]]])
    assert torch.equal(mask, ref_mask[0])
    torch.testing.assert_close(embedding, ref_embedding[0], rtol=0, atol=1e-6)
    half = PreencodedStore(setup["out"]["float16"])
    torch.testing.assert_close(half.latent(item["offset"], item["frames"]), expected, rtol=1e-2, atol=2e-3)


def test_diffgen_loss_is_the_same_from_preencoded_data(setup, tiny_diffgen_config, text_encoder_path):
    module = DiffGen(model=tiny_diffgen_config, autoencoder=str(setup["tmp"] / "diffae.safetensors"),
                     text_encoder=text_encoder_path, text_encoder_max_length=32, sample_rate=16000)
    audio_dm = BirdSoundDataModule(manifest=str(setup["manifest"]), sample_rate=16000, crop_length=CROP,
                                   batch_size=4, num_workers=0, with_text=True)
    audio_dm.setup("fit")
    raw_batch = next(iter(audio_dm.val_dataloader()))
    store = PreencodedStore(setup["out"]["float32"])
    dataset = LatentDataset(store, "valid", CROP // 64, random_crop=False)
    pre_batch = collate_latents([dataset[i] for i in range(len(raw_batch["text"]))])
    assert pre_batch["text"] == raw_batch["text"]
    losses = []
    for batch in (raw_batch, pre_batch):
        torch.manual_seed(1)
        losses.append(module.diffusion_loss(module.model, batch, training=True))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-6)


def test_diffgen_trains_from_latent_datamodule(setup, tiny_diffgen_config, text_encoder_path):
    pl.seed_everything(0)
    module = DiffGen(model=tiny_diffgen_config, autoencoder=str(setup["tmp"] / "diffae.safetensors"),
                     text_encoder=text_encoder_path, text_encoder_max_length=32, sample_rate=16000)
    datamodule = LatentDataModule(str(setup["out"]["float16"]), crop_length=CROP, sample_rate=16000,
                                  batch_size=4, num_workers=0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 3 and np.isfinite(float(trainer.callback_metrics["train/loss"]))


def test_latent_module_rejects_mismatched_rate(setup):
    with pytest.raises(ValueError, match="datamodule.sample_rate"):
        LatentDataModule(str(setup["out"]["float16"]), crop_length=CROP, sample_rate=32000)


def test_recordings_shorter_than_the_crop_warn_and_min_seconds_pads_their_audio(setup, text_encoder_path,
                                                                                tmp_path):
    """Zero latents are not silence: a crop longer than the recordings warns and names --min-seconds, and with it
    each recording is the on-the-fly latent of its zero-padded audio (the audio datamodule's padding)."""
    with pytest.warns(UserWarning, match=r"shorter than datamodule.crop_length=16384 .*--min-seconds 1.024"):
        LatentDataModule(str(setup["out"]["float32"]), crop_length=2 * CROP, sample_rate=16000)
    out = tmp_path / "padded"
    preencode(setup["manifest"], setup["tmp"] / "diffae.safetensors", out, text_encoder_path, 32, ("train",),
              min_seconds=2 * CROP / 16000, dtype="float32", device="cpu")
    store = PreencodedStore(out)
    item = store.items[0]
    audio = load_recording(setup["manifest"].parent / item["file"], 16000, 2)[:, :CROP]
    with torch.no_grad():
        expected = setup["diffae"].encoder(torch.nn.functional.pad(audio, (0, CROP))[None])[0]
    crop = LatentDataset(store, "train", 2 * CROP // 64, random_crop=False)[0]["latent"]
    torch.testing.assert_close(crop, expected, rtol=0, atol=1e-6)


def test_cli_min_seconds_counts_at_the_exports_sample_rate(setup, text_encoder_path, tmp_path):
    from main.preencode import main as preencode_main

    meta = preencode_main(["--manifest", str(setup["manifest"]), "--diffae", str(setup["tmp"] / "diffae.safetensors"),
                           "--out", str(tmp_path / "pre"), "--text-encoder", text_encoder_path, "--max-length", "32",
                           "--min-seconds", "1.0", "--device", "cpu"])
    assert meta["sample_rate"] == 16000
    frames = {item["frames"] for item in PreencodedStore(tmp_path / "pre").items}
    assert frames == {16000 // 64}  # 1 s at 16 kHz = 250 frames (the old rate guess of 32 kHz gave 500)


def _latents_by_file(folder) -> dict[str, torch.Tensor]:
    store = PreencodedStore(folder)
    return {item["file"]: store.latent(item["offset"], item["frames"]) for item in store.items}


def test_preencoding_from_a_stream_equals_preencoding_from_the_manifest(setup, text_encoder_path, tmp_path):
    from main.data.streaming import write_streaming_dataset

    write_streaming_dataset(setup["manifest"], tmp_path / "stream", chunk_size=3)
    meta = preencode(None, setup["tmp"] / "diffae.safetensors", tmp_path / "pre", text_encoder_path, 32,
                     ("train", "valid"), min_samples=CROP, dtype="float32", device="cpu", stream=tmp_path / "stream")
    from_manifest, from_stream = _latents_by_file(setup["out"]["float32"]), _latents_by_file(tmp_path / "pre")
    assert meta["num_items"] == len(from_manifest) and not meta["failed"]
    assert from_stream.keys() == from_manifest.keys()
    for name, latent in from_manifest.items():  # int16 PCM holds the same samples as the 16-bit files
        torch.testing.assert_close(from_stream[name], latent, rtol=0, atol=1e-6)
    manifest_store, stream_store = PreencodedStore(setup["out"]["float32"]), PreencodedStore(tmp_path / "pre")
    assert {i["file"]: manifest_store.labels[i["label"]] for i in manifest_store.items} == \
        {i["file"]: stream_store.labels[i["label"]] for i in stream_store.items}
    assert meta["source"]["stream"].endswith("dataset.json")


def test_a_truncated_chunk_is_counted_and_the_rest_encoded(setup, text_encoder_path, tmp_path):
    from main.data.streaming import write_streaming_dataset

    write_streaming_dataset(setup["manifest"], tmp_path / "stream", splits=["train", "valid"], chunk_size=100,
                            shuffle=False)
    chunk = next((tmp_path / "stream/train").glob("chunk-*.bin"))
    chunk.write_bytes(chunk.read_bytes()[:700])  # the chunk's header and part of its first clip
    meta = preencode(None, setup["tmp"] / "diffae.safetensors", tmp_path / "pre", text_encoder_path, 32,
                     ("train", "valid"), min_samples=CROP, dtype="float32", device="cpu", stream=tmp_path / "stream")
    valid_items = [i for i in PreencodedStore(setup["out"]["float32"]).items if i["split"] == "valid"]
    assert str(tmp_path / "stream/train") in meta["failed"]
    assert meta["num_items"] == len(valid_items)


def test_a_killed_preencoding_resumes_where_it_stopped(setup, text_encoder_path, tmp_path):
    import shutil

    full = setup["out"]["float32"]
    out = tmp_path / "pre"
    shutil.copytree(full, out)
    # What a kill leaves: a journal of the first recordings, part of the next one's latents, no items/meta.
    lines = (out / "encoded.csv").read_text().splitlines(keepends=True)
    (out / "encoded.csv").write_text("".join(lines[:4]) + lines[4][:-9])  # and half a row of the 4th
    kept = PreencodedStore(full).items[:3]
    row_bytes = 4 * PreencodedStore(full).meta["latent_channels"]
    with open(out / "latents.bin", "r+b") as f:
        f.truncate((kept[-1]["offset"] + kept[-1]["frames"] + 5) * row_bytes)
    (out / "items.csv").unlink()
    (out / "meta.json").unlink()
    args = (setup["manifest"], setup["tmp"] / "diffae.safetensors", out, text_encoder_path, 32, ("train", "valid"))
    meta = preencode(*args, min_samples=CROP, dtype="float32", device="cpu")
    assert meta["resumed_items"] == 3 and meta["num_items"] == PreencodedStore(full).meta["num_items"]
    resumed, expected = _latents_by_file(out), _latents_by_file(full)
    assert resumed.keys() == expected.keys()
    for name, latent in expected.items():
        torch.testing.assert_close(resumed[name], latent, rtol=0, atol=0)
    with pytest.raises(ValueError, match="dtype"):  # other settings never mix into the same folder
        preencode(*args, min_samples=CROP, dtype="float16", device="cpu")
    assert preencode(*args, min_samples=CROP, dtype="float16", device="cpu", overwrite=True)["resumed_items"] == 0
