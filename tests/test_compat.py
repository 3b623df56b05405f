"""Users of the original bird-diffusion code: its checkpoints and state dicts load, export, sample as they did
there (padding attended) and resume here. The fixtures were saved by the original's own DMAE / DiffGen code with
the versions of its time (pytorch-lightning 1.7.7, ema-pytorch 0.3.1): tests/fixtures/original, made by the
script there, with what the original's own CombinedSampler made from them."""

from __future__ import annotations

import json
import lzma
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from main.conf import load_group_yaml
from main.compat import OriginalLayoutError, checkpoint_layout, convert_training_checkpoint, read_checkpoint
from main.models import (build_diffae, generate_latent, get_default_combined_sampler, get_default_diffae,
                         get_default_diffgen)
from main.nets import defaults
from main.text import FrozenTextEncoder
from tests.conftest import save_export
from tests.test_train_cli import compose_exp, run_train

DIFFAE_TINY = load_group_yaml("diffae_arch", "tiny", inherit=False)
SAVED_BY_ORIGINAL = Path(__file__).parent / "fixtures" / "original"
FIXTURE = json.loads((SAVED_BY_ORIGINAL / "fixture.json").read_text())


@pytest.fixture(scope="module")
def by_original(tmp_path_factory) -> dict[str, Path]:
    """The original's DMAE and DiffGen checkpoints (decompressed) and the T5 folder its DiffGen used."""
    folder = tmp_path_factory.mktemp("saved_by_original")
    paths = {"t5": SAVED_BY_ORIGINAL / "t5"}
    for name in ("dmae", "diffgen"):
        paths[name] = folder / f"{name}.ckpt"
        paths[name].write_bytes(lzma.decompress((SAVED_BY_ORIGINAL / f"{name}.ckpt.xz").read_bytes()))
    return paths


@pytest.fixture
def by_original_seed(monkeypatch):
    """Make the fixtures' architectures 'the seed's', which is what the original's files are loaded as."""
    monkeypatch.setattr(defaults, "DIFFAE_CONFIG", {**defaults.DIFFAE_CONFIG, **FIXTURE["diffae_arch"]})
    monkeypatch.setattr(defaults, "DIFFGEN_CONFIG", {**defaults.DIFFGEN_CONFIG, **FIXTURE["diffgen_arch"]})


def arch_overrides(prefix: str, arch: dict[str, Any]) -> list[str]:
    """Hydra overrides that set every key of `arch` under `prefix`."""
    return [f"{prefix}.{key}={json.dumps(value).replace(' ', '')}" for key, value in arch.items()]


def by_original_overrides(name: str) -> list[str]:
    """train.py overrides for the architectures (and text encoder) of the original's checkpoint `name`."""
    if name == "dmae":
        return ["exp=dmae_tiny", *arch_overrides("model.model", FIXTURE["diffae_arch"])]
    return ["exp=diffgen_tiny", *arch_overrides("model.model", FIXTURE["diffgen_arch"]),
            *arch_overrides("model.autoencoder_model", FIXTURE["diffae_arch"]),
            f"model.text_encoder={SAVED_BY_ORIGINAL / 't5'}",
            f"model.text_encoder_max_length={FIXTURE['text_encoder_max_length']}"]


def prefixed(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class OldStyleHparams:
    """Stands for the Python objects old Lightning versions pickled into checkpoints (e.g. an hparams class)."""

    lr = 1e-4


def test_fixtures_were_saved_by_the_original_code_with_its_versions(by_original, capsys):
    assert FIXTURE["versions"]["pytorch-lightning"] == "1.7.7" and FIXTURE["versions"]["ema-pytorch"] == "0.3.1"
    assert all(path.stat().st_size < 2_000_000 for path in SAVED_BY_ORIGINAL.rglob("*") if path.is_file())
    from main.compat import main as compat_main

    for name, layout in (("dmae", "original-dmae"), ("diffgen", "original-diffgen")):
        checkpoint = read_checkpoint(by_original[name])  # safe loading: tensors and plain containers only
        assert checkpoint["pytorch-lightning_version"] == "1.7.7" and "hyper_parameters" not in checkpoint
        assert checkpoint_layout(checkpoint) == layout
        compat_main(["inspect", str(by_original[name])])
        report = json.loads(capsys.readouterr().out)
        assert report["layout"] == layout and report["unmappable"] == [] and report["has_optimizer"]
        assert report["global_step"] == FIXTURE["steps"] and report["kept"]["ema buffers"] == 2
    assert set(report["dropped"]) == {"ema.online_model.", "text_encoder.", "diffae."}


def test_original_code_checkpoints_convert_to_their_ema_weights(by_original, by_original_seed, tmp_path):
    """`python -m main.export` and `python -m main.compat convert` write exactly the checkpoint's
    ema.ema_model.* tensors (not the online model's)."""
    from main.compat import main as compat_main
    from main.export import main as export_main

    loaders = {"diffae": get_default_diffae, "diffgen": get_default_diffgen}
    for kind, name in (("diffae", "dmae"), ("diffgen", "diffgen")):
        ema, online = prefixed(by_original[name], "ema.ema_model."), prefixed(by_original[name], "model.")
        exported = export_main([str(by_original[name]), str(tmp_path / kind)])
        compat_main(["convert", str(by_original[name]), str(tmp_path / f"{kind}_converted")])
        for path in (exported, tmp_path / f"{kind}_converted.safetensors"):
            weights = load_file(str(path))
            assert weights.keys() <= ema.keys() and all(torch.equal(weights[k], ema[k]) for k in weights)
        for path in (exported, tmp_path / f"{kind}_converted.safetensors", by_original[name]):
            loaded = loaders[kind](path).state_dict()  # every EMA tensor, tied aliases included
            assert loaded.keys() == ema.keys() and all(torch.equal(loaded[k], ema[k]) for k in loaded)
        weights = load_file(str(exported))
        assert any(not torch.equal(weights[k], online[k]) for k in weights)
        config = json.loads((tmp_path / f"{kind}.json").read_text())
        assert config["kind"] == kind and config["origin"] == "original bird-diffusion"
    assert json.loads((tmp_path / "diffgen.json").read_text())["model"]["text_padding"] == "attend"


def test_original_code_checkpoints_sample_as_the_original_did(by_original, by_original_seed):
    """Text -> latent -> audio here equals what the original's own CombinedSampler made from these weights
    (tests/fixtures/original/expected.pt): same text embeddings, latents (padding attended, as there) and, with
    the library's linear schedule, the same decoded audio."""
    from main.diffusion import sample as run_sampler

    expected = torch.load(SAVED_BY_ORIGINAL / "expected.pt", weights_only=True)
    s = FIXTURE["sampling"]
    diffae, diffgen = get_default_diffae(by_original["dmae"]), get_default_diffgen(by_original["diffgen"])
    embedding, mask = FrozenTextEncoder(str(by_original["t5"]), FIXTURE["text_encoder_max_length"], "attend")(
        s["texts"])
    torch.testing.assert_close(embedding, expected["embedding"], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        latent = generate_latent(diffgen, embedding, mask, expected["noise"], s["sampling_steps"],
                                 s["embedding_scale"], "ddim")
        torch.testing.assert_close(latent, expected["latent"], rtol=1e-5, atol=1e-6)
        channels = [None] * diffae.inject_depth + [expected["latent"]]
        audio = run_sampler(lambda x, sigma: diffae.net(x, sigma, channels=channels), expected["decoding_noise"],
                            s["decoding_steps"], "ddim")
        torch.testing.assert_close(audio, expected["audio"], rtol=1e-5, atol=1e-5)
        # masking the padding (this repository's default for new models) would not reproduce it
        diffgen.config["text_padding"] = "mask"
        masked_embedding, masked = FrozenTextEncoder(str(by_original["t5"]), FIXTURE["text_encoder_max_length"],
                                                     "mask")(s["texts"])
        assert not masked.all()
        differs = generate_latent(diffgen, masked_embedding, masked, expected["noise"], s["sampling_steps"],
                                  s["embedding_scale"], "ddim")
    assert (differs - expected["latent"]).abs().max() > 1e-4
    sampler = get_default_combined_sampler(by_original["dmae"], by_original["diffgen"],
                                           text_encoder_name=str(by_original["t5"]), device="cpu")
    assert sampler.text_encoder.text_padding == "attend"
    assert sampler.text_encoder.max_length == FIXTURE["text_encoder_max_length"]
    out = sampler.sample(s["texts"], sampling_steps=2, decoding_steps=2, latent_length=s["latent_length"], seed=0)
    assert out.shape == expected["audio"].shape and torch.isfinite(out).all()


def test_state_dicts_and_pickled_checkpoints(by_original, by_original_seed, tmp_path):
    """`torch.save(state_dict)` files (what the original's get_default_* read) load; a checkpoint with other
    pickled objects is refused with the command that converts it, and that command works."""
    torch.save({"net.weight": torch.ones(1)}, tmp_path / "plain.pth")
    assert checkpoint_layout(read_checkpoint(tmp_path / "plain.pth")) == "state-dict"
    torch.save(prefixed(by_original["diffgen"], "ema.ema_model."), tmp_path / "diffgen_v3.pth")
    loaded = get_default_diffgen(tmp_path / "diffgen_v3.pth")
    assert loaded.config["text_padding"] == "attend"
    checkpoint = torch.load(by_original["dmae"], weights_only=True)
    checkpoint["hyper_parameters"] = OldStyleHparams()
    pickled = tmp_path / "pickled.ckpt"
    torch.save(checkpoint, pickled)
    with pytest.raises(OriginalLayoutError, match="--trust-pickle"):
        get_default_diffae(pickled)
    from main.compat import main as compat_main

    compat_main(["convert", str(pickled), str(tmp_path / "ae"), "--kind", "diffae", "--trust-pickle"])
    converted = get_default_diffae(tmp_path / "ae.safetensors")
    original = get_default_diffae(by_original["dmae"])
    assert all(torch.equal(a, b) for a, b in zip(converted.state_dict().values(), original.state_dict().values()))


def test_unmappable_checkpoint_is_refused_naming_keys(by_original):
    checkpoint = torch.load(by_original["dmae"], weights_only=True)
    checkpoint["state_dict"]["discriminator.weight"] = torch.ones(1)
    with pytest.raises(OriginalLayoutError, match="discriminator.weight"):
        convert_training_checkpoint(checkpoint, num_params=10)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dmae", "diffgen"])
def test_original_code_checkpoints_resume_through_train_py(by_original, name, tmp_path):
    """`+ckpt=<the original's .ckpt>` continues at its step with its optimizer state and EMA; a DiffGen keeps the
    DiffAE stored in its checkpoint."""
    original = torch.load(by_original[name], weights_only=True)
    result = run_train(tmp_path, *by_original_overrides(name), f"+ckpt={by_original[name]}", "trainer.max_steps=5",
                       "callbacks.checkpoint.every_n_train_steps=100", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "kept model." in output and "ema.ema_model." in output
    converted = torch.load(tmp_path / "run/converted_original.ckpt", weights_only=True)
    assert converted["global_step"] == original["global_step"] == FIXTURE["steps"]
    before = original["optimizer_states"][0]["state"]
    after = converted["optimizer_states"][0]["state"]
    assert sorted(after) == sorted(i for i in before if i < len(after)) and len(after) > 0
    assert all(torch.equal(after[i]["exp_avg"], before[i]["exp_avg"]) for i in after)
    last = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)
    assert last["global_step"] == 5
    if name == "diffgen":
        assert "text_padding=attend" in output and "dropped text_encoder." in output
        assert last["hyper_parameters"]["model"]["text_padding"] == "attend"
        autoencoder = Path(last["hyper_parameters"]["autoencoder"])
        assert autoencoder.name == "original_diffae.safetensors"
        stored = prefixed(by_original[name], "diffae.")
        assert all(torch.equal(v, stored[k]) for k, v in load_file(str(autoencoder)).items())


@pytest.mark.slow
def test_original_code_checkpoint_without_optimizer_starts_weights_only(by_original, tmp_path):
    checkpoint = torch.load(by_original["dmae"], weights_only=True)
    del checkpoint["optimizer_states"]
    torch.save(checkpoint, tmp_path / "weights_only.ckpt")
    result = run_train(tmp_path, *by_original_overrides("dmae"), f"+ckpt={tmp_path / 'weights_only.ckpt'}",
                       "trainer.max_steps=2", "callbacks.checkpoint.every_n_train_steps=100",
                       f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "weights only" in result.stdout + result.stderr
    assert torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)["global_step"] == 2


def other_diffae(path: Path, seed: int = 1) -> Path:
    """A DiffAE export of the fixtures' architecture with other weights than the DiffGen checkpoint's."""
    torch.manual_seed(seed)
    return save_export(build_diffae(**FIXTURE["diffae_arch"]), path,
                       {"kind": "diffae", "model": FIXTURE["diffae_arch"], "sample_rate": 16000})


def test_resuming_an_original_diffgen_keeps_the_diffae_in_its_checkpoint(by_original, tmp_path, caplog):
    """model.autoencoder=null: the checkpoint's DiffAE is written out and used; the same weights elsewhere are
    accepted; another DiffAE (or a missing file) is refused naming the setting and the ways out;
    +original_autoencoder=config uses it on purpose."""
    from main.compat import migrate_if_original
    from main.config import ConfigError

    def config(*overrides: str):
        cfg = compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", *by_original_overrides("diffgen")[1:],
                          *overrides)
        cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    cfg = config("model.autoencoder=null")
    assert migrate_if_original(str(by_original["diffgen"]), cfg) is not None
    written = Path(cfg.model.autoencoder)
    stored = prefixed(by_original["diffgen"], "diffae.")
    assert written.name == "original_diffae.safetensors"
    assert all(torch.equal(v, stored[k]) for k, v in load_file(str(written)).items())
    assert cfg.model.model.text_padding == "attend"

    same = config(f"model.autoencoder={written}")
    assert migrate_if_original(str(by_original["diffgen"]), same) is not None
    assert same.model.autoencoder == str(written) and "holds the DiffAE stored in the checkpoint" in caplog.text

    other = other_diffae(tmp_path / "other" / "diffae")
    for autoencoder, why in ((other, "is not the DiffAE stored"), (tmp_path / "missing.safetensors", "not found")):
        with pytest.raises(ConfigError, match=why) as refused:
            migrate_if_original(str(by_original["diffgen"]), config(f"model.autoencoder={autoencoder}"))
        assert f"model.autoencoder={autoencoder}" in str(refused.value)
        assert "model.autoencoder=null" in str(refused.value) and "+original_autoencoder=config" in str(refused.value)

    on_purpose = config(f"model.autoencoder={other}", "+original_autoencoder=config")
    assert migrate_if_original(str(by_original["diffgen"]), on_purpose) is not None
    assert on_purpose.model.autoencoder == str(other) and "replaces the DiffAE stored" in caplog.text
    with pytest.raises(ConfigError, match="original_autoencoder=both"):
        migrate_if_original(str(by_original["diffgen"]), config("+original_autoencoder=both"))
    # neither an original checkpoint nor an existing file: nothing to migrate (the config check reports a missing one)
    assert migrate_if_original(None, config()) is None
    assert migrate_if_original(str(tmp_path / "absent.ckpt"), config()) is None


def test_resuming_the_continued_run_keeps_the_diffae_it_was_trained_with(by_original, tmp_path, caplog):
    """After an original DiffGen resumed with model.autoencoder=null, the run's own checkpoints (`+ckpt=last`) do
    not hold the DiffAE: the same command takes the file the checkpoint names, never a random DiffAE, and refuses
    naming the setting when that file is gone."""
    from main.compat import migrate_if_original
    from main.config import ConfigError

    def config():
        cfg = compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", *by_original_overrides("diffgen")[1:],
                          "model.autoencoder=null")
        cfg.paths.output_dir = str(tmp_path / "run")
        return cfg

    first = config()
    migrate_if_original(str(by_original["diffgen"]), first)
    written = Path(first.model.autoencoder)
    continued = tmp_path / "last.ckpt"  # what the continued run saves: its hparams name the DiffAE file
    torch.save({"state_dict": {}, "hyper_parameters": {"kind": "diffgen", "autoencoder": str(written)}}, continued)

    again = config()
    assert migrate_if_original(str(continued), again) is None
    assert again.model.autoencoder == str(written) and "the DiffAE the checkpoint was trained with" in caplog.text
    written.unlink()
    with pytest.raises(ConfigError, match="model.autoencoder=null: the checkpoint was trained with the DiffAE"):
        migrate_if_original(str(continued), config())


@pytest.mark.slow
def test_exp_diffgen_refuses_to_resume_an_original_on_another_diffae(by_original, tmp_path):
    """The case users meet: `exp=diffgen` points model.autoencoder at exports/diffae.safetensors, which holds
    another DiffAE than the original checkpoint: train.py stops with one line naming the setting."""
    other_diffae(tmp_path / "exports" / "diffae")
    result = run_train(tmp_path, "exp=diffgen", f"+ckpt={by_original['diffgen']}", f"hydra.run.dir={tmp_path}/run")
    assert result.returncode == 2, result.stderr[-3000:]
    assert f"config error: model.autoencoder={tmp_path}/exports/diffae.safetensors is not the DiffAE" in result.stderr
    assert "model.autoencoder=null" in result.stderr


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
