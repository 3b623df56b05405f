"""Pre-encoded latents and cached text embeddings give DiffGen the same training signal as on-the-fly encoding."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from main.data.audio import load_recording
from main.data.captions import CaptionConfig, caption_record, variant_list
from main.data.datamodule import BirdSoundDataModule
from main.data.latents import LatentDataModule, LatentDataset, PreencodedStore, collate_latents
from main.data.manifest import read_manifest
from main.data.synthetic import generate_synthetic_dataset
from main.models import build_diffae
from main.modules import DiffGen
from main.preencode import preencode
from main.text import FrozenTextEncoder
from tests.conftest import ROOT, save_export

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


# ---------------------------------------------------------------------------------------------- caption variants

OLD_FORMAT = ROOT / "tests/fixtures/preencoded_v1"  # written by main.preencode at ac592a1, before caption variants
VARIANTS = {"enabled": True, "variants": 4, "field_p": 0.0}  # the species alone: short variants that repeat


@pytest.fixture(scope="module")
def with_variants(setup, text_encoder_path):
    """The setup's data pre-encoded with 4 caption variants per recording."""
    out = setup["tmp"] / "pre_variants"
    meta = preencode(setup["manifest"], setup["tmp"] / "diffae.safetensors", out, text_encoder_path, 32,
                     ("train", "valid"), min_samples=CROP, dtype="float32", device="cpu", captions=VARIANTS)
    return {"out": out, "meta": meta}


def test_each_distinct_caption_is_encoded_once_and_each_recording_lists_its_variants(setup, with_variants,
                                                                                     text_encoder_path):
    store = PreencodedStore(with_variants["out"])
    rows = {str(r["file"]): r for r in read_manifest(setup["manifest"])}
    config = CaptionConfig.from_mapping(VARIANTS)
    expected: set[str] = set()
    for item in store.items:
        row = rows[item["file"]]
        variants = variant_list(str(row["label"]), caption_record(row), config, item["file"])
        assert store.labels[item["label"]] == row["label"]
        assert [store.labels[v] for v in item["variants"]] == variants  # repeats kept, in draw order
        expected |= {str(row["label"]), *variants}
    assert len(store.labels) == len(set(store.labels)) == len(expected)  # each distinct string once
    assert set(store.labels) == expected and with_variants["meta"]["num_labels"] == len(expected)
    assert with_variants["meta"]["caption_variants"] == 4 and with_variants["meta"]["captions"]["variants"] == 4
    assert len(expected) < len(store.items) * 5  # short variants repeat across recordings
    text = FrozenTextEncoder(text_encoder_path, 32)
    variant = store.items[0]["variants"][0]
    embedding, mask = store.text(variant)
    reference, reference_mask = text([store.labels[variant]])
    assert torch.equal(mask, reference_mask[0])
    torch.testing.assert_close(embedding, reference[0], rtol=0, atol=1e-6)
    # the latents are the ones encoded without variants
    assert _latents_by_file(with_variants["out"]).keys() == _latents_by_file(setup["out"]["float32"]).keys()


def test_training_draws_among_the_variants_per_epoch_and_the_exact_label_at_its_rate(with_variants):
    store = PreencodedStore(with_variants["out"])
    dataset = LatentDataset(store, "train", CROP // 64, random_crop=True, seed=3, exact_p=0.25)
    n = len(dataset)
    epochs = -(-2000 // n)
    texts = [[dataset[(i, epoch)]["text"] for i in range(n)] for epoch in range(epochs)]
    assert texts[:3] == [[dataset[(i, epoch)]["text"] for i in range(n)] for epoch in range(3)]
    assert len({tuple(t) for t in texts}) == epochs  # each epoch draws anew
    labels = [store.labels[item["label"]] for item in dataset.items]
    exact = sum(text == labels[i] for epoch in texts for i, text in enumerate(epoch))
    draws = n * epochs  # a variant equal to the exact label would count too: rare enough for 4 sigmas
    assert abs(exact - 0.25 * draws) <= 4 * (draws * 0.25 * 0.75) ** 0.5 + 1, (exact, draws)
    allowed = [{labels[i], *(store.labels[v] for v in item["variants"])} for i, item in enumerate(dataset.items)]
    assert all(text in allowed[i] for epoch in texts for i, text in enumerate(epoch))
    fixed = LatentDataset(store, "train", CROP // 64, random_crop=True, seed=3)  # captions off: the labels
    assert [fixed[(i, 5)]["text"] for i in range(n)] == labels


class _TextLog(pl.Callback):
    """The captions of every training batch, by global step."""

    def __init__(self) -> None:
        self.texts: dict[int, list[str]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.texts[trainer.global_step] = list(batch["text"])


@pytest.mark.slow
def test_resume_mid_epoch_is_exact_with_caption_variants(with_variants, tiny_diffgen_config, tiny_diffae_config,
                                                         text_encoder_path, tmp_path):
    """Stopped at a mid-epoch checkpoint and resumed (2 workers, whose global RNGs differ between the runs), a run
    sees the captions and ends with the weights of the uninterrupted run."""
    from main.checkpointing import AtomicCheckpointIO

    def run(folder, max_steps, ckpt=None):
        module = DiffGen(model=tiny_diffgen_config, autoencoder_model=tiny_diffae_config,
                         text_encoder=text_encoder_path, text_encoder_max_length=32, sample_rate=16000,
                         ema_update_after_step=2, lr=1e-3)
        datamodule = LatentDataModule(str(with_variants["out"]), crop_length=CROP, sample_rate=16000, batch_size=4,
                                      num_workers=2, seed=3, captions={"enabled": True, "exact_p": 0.25})
        log = _TextLog()
        checkpoint = pl.callbacks.ModelCheckpoint(dirpath=tmp_path / folder, every_n_train_steps=3, save_last=True)
        trainer = pl.Trainer(accelerator="cpu", max_steps=max_steps, logger=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=[checkpoint, log], plugins=[AtomicCheckpointIO()],
                             num_sanity_val_steps=0, limit_val_batches=0, default_root_dir=tmp_path / folder)
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt)
        return module, log.texts

    batches = sum(item["split"] == "train" for item in PreencodedStore(with_variants["out"]).items) // 4
    assert 3 % batches != 0 and batches < 8, "the checkpoint at step 3 must fall mid-epoch, step 8 in a later epoch"
    pl.seed_everything(0)
    straight, straight_texts = run("straight", 8)
    pl.seed_everything(0)
    _, first_texts = run("resumed", 3)
    pl.seed_everything(99)  # the checkpoint restores the RNG states
    resumed, resumed_texts = run("resumed", 8, str(tmp_path / "resumed/last.ckpt"))
    assert {**first_texts, **resumed_texts} == straight_texts
    assert any(straight_texts[s] != straight_texts[s - batches] for s in range(batches, 8))  # epochs differ
    for a, b in [(straight.model, resumed.model), (straight.ema_model, resumed.ema_model)]:
        for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=key)


def test_data_pre_encoded_before_caption_variants_still_trains(tiny_diffgen_config, tiny_diffae_config,
                                                               text_encoder_path):
    """The fixture folder written by the code before caption variants (no `variants` column) loads, warns that it
    has no variants when they are enabled, and trains on each recording's one label."""
    assert "variants" not in (OLD_FORMAT / "items.csv").read_text().splitlines()[0]
    with pytest.warns(UserWarning, match="pre-encoded without caption variants"):
        datamodule = LatentDataModule(str(OLD_FORMAT), crop_length=CROP, sample_rate=16000, batch_size=2,
                                      num_workers=0, captions={"enabled": True})
    store = datamodule.store
    assert all(item["variants"] == [] for item in store.items)
    dataset = datamodule._dataset("train", train=True)
    assert [dataset[(i, 4)]["text"] for i in range(len(dataset))] == [store.labels[it["label"]] for it in dataset.items]
    pl.seed_everything(0)
    module = DiffGen(model=tiny_diffgen_config, autoencoder_model=tiny_diffae_config, text_encoder=text_encoder_path,
                     text_encoder_max_length=32, sample_rate=16000)
    trainer = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    assert trainer.global_step == 2 and np.isfinite(float(trainer.callback_metrics["train/loss"]))


def test_a_killed_preencoding_with_variants_resumes_to_the_same_folder(setup, with_variants, text_encoder_path,
                                                                       tmp_path):
    import shutil

    out = tmp_path / "pre"
    shutil.copytree(with_variants["out"], out)
    lines = (out / "encoded.csv").read_text().splitlines(keepends=True)
    (out / "encoded.csv").write_text("".join(lines[:4]))  # the header and 3 recordings
    for name in ("items.csv", "meta.json", "labels.json"):
        (out / name).unlink()
    args = (setup["manifest"], setup["tmp"] / "diffae.safetensors", out, text_encoder_path, 32, ("train", "valid"))
    meta = preencode(*args, min_samples=CROP, dtype="float32", device="cpu", captions=VARIANTS)
    assert meta["resumed_items"] == 3
    for name in ("items.csv", "labels.json", "encoded.csv"):
        assert (out / name).read_text() == (with_variants["out"] / name).read_text(), name
    with pytest.raises(ValueError, match="captions"):  # variants drawn otherwise never mix into the folder
        preencode(*args, min_samples=CROP, dtype="float32", device="cpu", captions={**VARIANTS, "variants": 2})


def test_cli_captions_flag_pre_encodes_variants(setup, text_encoder_path, tmp_path):
    from main.preencode import main as preencode_main

    meta = preencode_main(["--manifest", str(setup["manifest"]), "--diffae", str(setup["tmp"] / "diffae.safetensors"),
                           "--out", str(tmp_path / "pre"), "--text-encoder", text_encoder_path, "--max-length", "32",
                           "--splits", "valid", "--device", "cpu", "--captions", "variants=3", "lower_p=0"])
    assert meta["caption_variants"] == 3 and meta["captions"]["lower_p"] == 0
    assert all(len(item["variants"]) == 3 for item in PreencodedStore(tmp_path / "pre").items)
