"""Users of the original bird-diffusion code: its checkpoints and state dicts load, export, sample as they did
there (padding attended) and resume here (fixtures: tests/original_layout.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from main.conf import load_group_yaml
from main.compat import OriginalLayoutError, checkpoint_layout, convert_training_checkpoint, read_checkpoint
from main.models import generate_latent, get_default_combined_sampler, get_default_diffae, get_default_diffgen
from main.nets import defaults
from main.text import FrozenTextEncoder
from tests.conftest import ROOT, ToneDataset, collate
from tests.original_layout import (
    OldStyleHparams,
    OriginalStyleDiffGen,
    OriginalStyleDMAE,
    original_diffgen_unet,
    tiny_t5_folder,
    train_and_save,
)
from tests.test_train_cli import run_train

DIFFAE_TINY = load_group_yaml("diffae_arch", "tiny", inherit=False)
DIFFGEN_TINY = load_group_yaml("diffgen_arch", "tiny", inherit=False)
MAX_LENGTH = DIFFGEN_TINY["embedding_max_length"]


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints of the original's DMAE and DiffGen (tiny), and the T5 folder the DiffGen used."""
    folder = tmp_path_factory.mktemp("original")
    t5 = tiny_t5_folder(folder / "t5", d_model=DIFFGEN_TINY["embedding_features"])
    loader = DataLoader(ToneDataset(size=8, length=8192), batch_size=4, collate_fn=collate)
    torch.manual_seed(0)
    dmae = OriginalStyleDMAE(DIFFAE_TINY)
    dmae_ckpt = train_and_save(dmae, loader, folder / "dmae.ckpt")
    diffgen = OriginalStyleDiffGen(DIFFGEN_TINY, dmae.ema.ema_model, t5, MAX_LENGTH)
    diffgen_ckpt = train_and_save(diffgen, loader, folder / "diffgen.ckpt")
    return {"dmae": dmae_ckpt, "diffgen": diffgen_ckpt, "t5": t5, "folder": folder}


@pytest.fixture
def tiny_seed(monkeypatch):
    """Make the tiny architectures 'the seed's', which is what the original's files are loaded as."""
    monkeypatch.setattr(defaults, "DIFFAE_CONFIG", {**defaults.DIFFAE_CONFIG, **DIFFAE_TINY})
    monkeypatch.setattr(defaults, "DIFFGEN_CONFIG", {**defaults.DIFFGEN_CONFIG, **DIFFGEN_TINY})


def ema_weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k[len("ema.ema_model."):]: v for k, v in state.items() if k.startswith("ema.ema_model.")}


def test_layouts_are_recognised(originals, tmp_path):
    assert checkpoint_layout(read_checkpoint(originals["dmae"])) == "original-dmae"
    assert checkpoint_layout(read_checkpoint(originals["diffgen"])) == "original-diffgen"
    torch.save({"net.weight": torch.ones(1)}, tmp_path / "plain.pth")
    assert checkpoint_layout(read_checkpoint(tmp_path / "plain.pth")) == "state-dict"
    diffgen = read_checkpoint(originals["diffgen"])["state_dict"]
    assert any(k.startswith("text_encoder.") for k in diffgen) and any(k.startswith("diffae.") for k in diffgen)


def test_original_checkpoints_export_their_ema(originals, tiny_seed, tmp_path):
    from main.export import main as export_main

    for kind, name in (("diffae", "dmae"), ("diffgen", "diffgen")):
        weights = export_main([str(originals[name]), str(tmp_path / kind)])
        exported = load_file(str(weights))
        ema = ema_weights(originals[name])
        online = {k[len("model."):]: v for k, v in torch.load(originals[name], weights_only=True)[
            "state_dict"].items() if k.startswith("model.")}
        assert exported and all(torch.equal(exported[k], ema[k]) for k in exported)
        assert any(not torch.equal(exported[k], online[k]) for k in exported if exported[k].is_floating_point())
        config = json.loads(weights.with_suffix(".json").read_text())
        assert config["kind"] == kind and config["origin"] == "original bird-diffusion"
    diffgen_config = json.loads((tmp_path / "diffgen.json").read_text())
    assert diffgen_config["model"]["text_padding"] == "attend"
    assert diffgen_config["text_encoder_max_length"] == MAX_LENGTH
    # the exports and the original files load alike through the notebook API
    a, b = get_default_diffgen(tmp_path / "diffgen.safetensors"), get_default_diffgen(originals["diffgen"])
    assert a.config["text_padding"] == b.config["text_padding"] == "attend"
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_original_diffgen_samples_as_it_did_there(originals, tiny_seed):
    """Same latents as the original's own `diffgen.sample` (a-unet attention over all 32 tokens, padding
    included) within float tolerance; masking the padding instead would change them."""
    ours = get_default_diffgen(originals["diffgen"])
    theirs = original_diffgen_unet(DIFFGEN_TINY)
    theirs.load_state_dict(ema_weights(originals["diffgen"]))
    module = OriginalStyleDiffGen(DIFFGEN_TINY, get_default_diffae(originals["dmae"]), originals["t5"], MAX_LENGTH)
    texts = ["Turdus merula; song", "a"]
    noise = torch.randn(2, DIFFGEN_TINY["in_channels"], 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = theirs.sample(noise, num_steps=4, embedding=module.get_text_embeddings(texts),
                                 embedding_scale=3.0)
        embedding, mask = FrozenTextEncoder(str(originals["t5"]), MAX_LENGTH, "attend")(texts)
        got = generate_latent(ours, embedding, mask, noise, 4, 3.0, "ddim")
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)  # einsum vs SDPA rounding
        ours.config["text_padding"] = "mask"
        masked_embedding, masked = FrozenTextEncoder(str(originals["t5"]), MAX_LENGTH, "mask")(texts)
        assert not masked.all()
        differs = generate_latent(ours, masked_embedding, masked, noise, 4, 3.0, "ddim")
    assert (differs - expected).abs().max() > 0.01 * expected.abs().max()


def test_combined_sampler_from_original_files(originals, tiny_seed):
    sampler = get_default_combined_sampler(originals["dmae"], originals["diffgen"],
                                           text_encoder_name=str(originals["t5"]), device="cpu")
    assert sampler.text_encoder.text_padding == "attend" and sampler.text_encoder.max_length == MAX_LENGTH
    audio = sampler.sample(["Turdus merula; song"], sampling_steps=2, decoding_steps=2, latent_length=16, seed=0)
    assert audio.shape == (1, 2, 16 * 64) and torch.isfinite(audio).all()


def test_state_dicts_and_pickled_modules(originals, tiny_seed, tmp_path):
    """`torch.save(state_dict)` files (what the original's get_default_* read) load; a pickled module is refused
    with the command that converts it, and that command works."""
    diffgen_state = {k: v for k, v in ema_weights(originals["diffgen"]).items()}
    torch.save(diffgen_state, tmp_path / "diffgen_v3.pth")
    loaded = get_default_diffgen(tmp_path / "diffgen_v3.pth")
    assert loaded.config["text_padding"] == "attend"
    # A checkpoint holding other Python objects (old Lightning versions pickled e.g. their hparams' class) is
    # refused by the safe loader with the command that converts it, and that command works.
    checkpoint = torch.load(originals["dmae"], weights_only=True)
    checkpoint["hyper_parameters"] = OldStyleHparams()
    pickled = tmp_path / "pickled.ckpt"
    torch.save(checkpoint, pickled)
    with pytest.raises(OriginalLayoutError, match="--trust-pickle"):
        get_default_diffae(pickled)
    from main.compat import main as compat_main

    compat_main(["convert", str(pickled), str(tmp_path / "ae"), "--kind", "diffae", "--trust-pickle"])
    converted = get_default_diffae(tmp_path / "ae.safetensors")
    original = get_default_diffae(originals["dmae"])
    assert all(torch.equal(a, b) for a, b in zip(converted.state_dict().values(), original.state_dict().values()))


def test_unmappable_checkpoint_is_refused_naming_keys(originals):
    checkpoint = torch.load(originals["dmae"], weights_only=True)
    checkpoint["state_dict"]["discriminator.weight"] = torch.ones(1)
    with pytest.raises(OriginalLayoutError, match="discriminator.weight"):
        convert_training_checkpoint(checkpoint, num_params=10)


@pytest.mark.parametrize("exp,name", [("dmae_tiny", "dmae"), ("diffgen_tiny", "diffgen")])
def test_original_checkpoint_resumes_through_train_py(originals, exp, name, tmp_path):
    """`+ckpt=<original .ckpt>` continues at the original's step with its optimizer and EMA state."""
    original = torch.load(originals[name], weights_only=True)
    extra = [f"model.text_encoder={originals['t5']}"] if name == "diffgen" else []
    result = run_train(tmp_path, f"exp={exp}", f"+ckpt={originals[name]}", "trainer.max_steps=5",
                       "callbacks.checkpoint.every_n_train_steps=100", f"hydra.run.dir={tmp_path}/run", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "kept model." in output and "ema.ema_model." in output
    if name == "diffgen":
        assert "text_padding=attend" in output and "dropped text_encoder." in output
    converted = torch.load(tmp_path / "run/converted_original.ckpt", weights_only=True)
    assert converted["global_step"] == original["global_step"] == 3
    before = original["optimizer_states"][0]["state"]
    after = converted["optimizer_states"][0]["state"]
    assert sorted(after) == sorted(i for i in before if i < len(after)) and len(after) > 0
    assert all(torch.equal(after[i]["exp_avg"], before[i]["exp_avg"]) for i in after)
    last = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 5
    if name == "diffgen":
        assert last["hyper_parameters"]["model"]["text_padding"] == "attend"
        assert Path(last["hyper_parameters"]["autoencoder"]).name == "original_diffae.safetensors"


def test_original_checkpoint_without_optimizer_starts_weights_only(originals, tmp_path):
    checkpoint = torch.load(originals["dmae"], weights_only=True)
    del checkpoint["optimizer_states"]
    torch.save(checkpoint, tmp_path / "weights_only.ckpt")
    result = run_train(tmp_path, "exp=dmae_tiny", f"+ckpt={tmp_path / 'weights_only.ckpt'}", "trainer.max_steps=2",
                       "callbacks.checkpoint.every_n_train_steps=100", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weights only" in result.stdout + result.stderr
    assert torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["global_step"] == 2


def test_attend_mode_refuses_pre_encoded_data(tmp_path):
    from main.config import ConfigError, validate_config
    from tests.test_train_cli import compose_exp

    (tmp_path / "meta.json").write_text("{}")
    cfg = compose_exp("diffgen_tiny_preencoded", f"paths.root_dir={tmp_path}", "model.model.text_padding=attend",
                      f"datamodule.preencoded={tmp_path}")
    cfg.model.autoencoder = None
    with pytest.raises(ConfigError, match="text_padding=attend"):
        validate_config(cfg)


def hub_style_folder(folder: Path, diffae_config: dict) -> Path:
    """A DiffAE in the layout of the pretrained hub model: config.json with an auto_map to remote code (not
    needed here: only the weights are read) and the weights of the `AutoModel`, whose `.model` is the DiffAE."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "hub-style-dmae", "architectures": ["HubStyleDMAE"], "diffae": diffae_config,
        "auto_map": {"AutoConfig": "hub_config.HubStyleDMAEConfig", "AutoModel": "hub_model.HubStyleDMAE"},
    }))
    from main.models import build_diffae

    torch.manual_seed(1)
    # The hub model's pytorch_model.bin: a torch.save'd state dict with every (tied) name.
    torch.save({f"model.{k}": v for k, v in build_diffae(**diffae_config).state_dict().items()},
               folder / "pytorch_model.bin")
    return folder


def test_init_from_a_hub_layout_folder_brings_every_weight(tmp_path):
    """`model.init_from` with the hub's layout (as `init_from: pretrained` downloads it) sets every weight of the
    DMAE, and its EMA starts from them; a model of another shape is refused naming the keys."""
    from main.modules import DMAE

    folder = hub_style_folder(tmp_path / "hub", DIFFAE_TINY)
    expected = torch.load(folder / "pytorch_model.bin", weights_only=True)
    module = DMAE(model=DIFFAE_TINY, sample_rate=16000, init_from=str(folder))
    for model in (module.model, module.ema_model):
        state = model.state_dict()
        assert all(torch.equal(state[k[len("model."):]], v) for k, v in expected.items())
    other = {**DIFFAE_TINY, "channels": [16, 32, 64]}
    with pytest.raises(RuntimeError, match="size mismatch for .*net"):
        DMAE(model=other, sample_rate=16000, init_from=str(folder))
