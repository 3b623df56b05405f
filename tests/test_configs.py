"""Config groups (config.yaml, exp/, main/conf/): every experiment composes to the values it had before the groups
(plus the full architecture), the Python defaults are the YAML ones, and validation follows the model's class."""

from __future__ import annotations

import inspect
import json
from typing import Any, Optional

import pytest
from omegaconf import OmegaConf

from main.conf import load_arch_yaml, load_group_yaml
from main.config import ConfigError, validate_config
from main.demo import compose_experiment, preencode_args
from main.models import DIFFAE_CONFIG, DIFFGEN_CONFIG
from main.modules import DMAE, DiffGen, EMADiffusionModule
from tests.conftest import ROOT
from tests.test_train_cli import EXPERIMENTS, compose_exp

# Every experiment's composed config (unresolved) at 38701f4, before the config groups; "__default__" is
# `python train.py` without exp=. A value changed on purpose is changed here too.
REFERENCE = json.loads((ROOT / "tests/composed_configs.json").read_text())
ARCHITECTURES = ("model", "autoencoder_model")  # model.<key> holding an architecture


def composed(exp: Optional[str]) -> dict[str, Any]:
    """The unresolved config `python train.py [exp=<exp>]` composes."""
    return OmegaConf.to_container(compose_experiment([f"exp={exp}"] if exp else []), resolve=False)


def seed_architecture(model: dict[str, Any], key: str) -> dict[str, Any]:
    """The seed architecture `model.<key>` completes (DiffAE or DiffGen)."""
    if key == "autoencoder_model" or model["_target_"].endswith("DMAE"):
        return DIFFAE_CONFIG
    return DIFFGEN_CONFIG


@pytest.mark.parametrize("exp", [*EXPERIMENTS, None])
def test_experiment_composes_to_its_reference_values_plus_the_full_architecture(exp):
    cfg, reference = composed(exp), json.loads(json.dumps(REFERENCE[exp or "__default__"]))
    for key in ARCHITECTURES:
        arch, before = cfg["model"].pop(key, None), reference["model"].pop(key, None)
        assert (arch is None) == (before is None), key
        if before:  # the same overrides, now on top of every seed key
            assert set(arch) == set(seed_architecture(cfg["model"], key)), key
            assert {k: arch[k] for k in before} == before, key
        elif before is not None and key == "model":  # was {}: the seed's architecture
            assert arch == seed_architecture(cfg["model"], key)
        elif before is not None:
            assert arch == {}, "autoencoder_model stays empty unless the experiment builds an untrained DiffAE"
    assert cfg == reference


def test_seed_experiments_show_the_seed_architectures():
    assert composed("dmae")["model"]["model"] == DIFFAE_CONFIG
    assert composed("diffgen")["model"]["model"] == DIFFGEN_CONFIG
    assert composed("diffgen_tiny")["model"]["autoencoder_model"] == load_arch_yaml("diffae_arch", "tiny")
    assert composed("dmae_demo")["model"]["model"] == load_arch_yaml("diffae_arch", "demo")


def test_experiment_files_say_only_what_differs():
    for path in (ROOT / "exp").glob("*.yaml"):
        assert len(path.read_text().splitlines()) <= 25, path.name


def test_group_loader_merges_like_hydra():
    tiny = load_group_yaml("diffae_arch", "tiny", inherit=False)
    assert "defaults" not in tiny and load_arch_yaml("diffae_arch", "tiny") == {**DIFFAE_CONFIG, **tiny}
    training = set(load_group_yaml("training", "seed"))
    for exp, preset in [("dmae", "seed"), ("dmae_tiny", "tiny"), ("diffgen_demo", "demo")]:
        model = composed(exp)["model"]
        assert {k: model[k] for k in training} == load_group_yaml("training", preset), exp


def signature_defaults(cls: type) -> dict[str, Any]:
    """The keyword defaults of `cls.__init__` (tuples as lists, as YAML has them)."""
    defaults = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if p.default is not inspect.Parameter.empty:
            defaults[name] = list(p.default) if isinstance(p.default, tuple) else p.default
    return defaults


@pytest.mark.parametrize("cls, exp", [(DMAE, "dmae"), (DiffGen, "diffgen")])
def test_module_defaults_are_the_composed_yaml_defaults(cls, exp, tmp_path):
    model = OmegaConf.to_container(compose_exp(exp, f"paths.root_dir={tmp_path}").model, resolve=True)
    python = {**signature_defaults(EMADiffusionModule), **signature_defaults(cls)}
    config_driven = set(load_group_yaml("training", "seed")) | {
        "sample_rate", "text_encoder", "text_encoder_max_length", "cfg_mask_proba", "preview_embedding_scale"}
    assert set(load_group_yaml("training", "seed")) <= set(python)
    for key in config_driven & set(python):
        assert python[key] == model[key], key


class RenamedDMAE(DMAE):
    """A DMAE under another name and module: validation must still check its architecture."""


def test_validation_dispatches_on_the_model_class(tmp_path):
    bad_crop = ["datamodule.crop_length=8100"]
    with pytest.raises(ConfigError, match=r"crop_length=8100 must be a multiple"):
        validate_config(compose_exp("dmae_tiny", f"paths.root_dir={tmp_path}", *bad_crop,
                                    f"model._target_={__name__}.RenamedDMAE"))
    with pytest.raises(ConfigError, match=r"model\._target_=main\.modules\.Renamed"):
        validate_config(compose_exp("dmae_tiny", f"paths.root_dir={tmp_path}", "model._target_=main.modules.Renamed"))


@pytest.mark.parametrize("size", ["demo", "tiny"])
def test_demo_pre_encodes_with_the_experiments_text_encoder_and_crop(size):
    """The text encoder of the experiment, recordings padded in audio to at least one crop (in samples at the
    experiment's rate, exactly), so no latent crop is padded with zeros, and the experiment's caption variants."""
    cfg = compose_experiment([f"exp=diffgen_{size}_preencoded"])
    model = cfg.model
    args = preencode_args([f"exp=diffgen_{size}_preencoded"])
    assert args[:4] == ["--text-encoder", model.text_encoder, "--max-length", str(model.text_encoder_max_length)]
    assert model.text_encoder_max_length == model.model.embedding_max_length
    assert args[4] == "--min-seconds" and round(float(args[5]) * cfg.sample_rate) == cfg.datamodule.crop_length
    # caption variants: the demo pre-encodes its experiment's (on), the tiny experiments none (off)
    captions = OmegaConf.to_container(cfg.datamodule.captions)
    if size == "demo":
        from main.preencode import caption_options

        assert captions["enabled"] and args[6] == "--captions" and caption_options(args[7:]) == captions
    else:
        assert not captions["enabled"] and len(args) == 6


@pytest.mark.parametrize("setting, value, message", [
    ("model.model.text_padding", "pad", r"model\.model\.text_padding must be one of"),
    ("model.text_encoder_max_length", 64, r"model\.text_encoder_max_length=64 exceeds model\.model\.embedding_max_"),
])
def test_a_rule_checked_at_start_up_is_the_one_construction_checks(tmp_path, setting, value, message,
                                                                   tiny_diffgen_config, tiny_diffae_config,
                                                                   text_encoder_path):
    """validate_config names the key; building the model from Python (no config) runs the same rule."""
    from main.nets.builders import build_diffgen

    with pytest.raises(ConfigError, match="^" + message):
        validate_config(compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", f"{setting}={value}"))
    rule = message.removeprefix(r"model\.model\.")  # the builder does not know where its settings sit
    with pytest.raises(ValueError, match=rule):
        if setting.startswith("model.model."):
            build_diffgen(**{**tiny_diffgen_config, setting.rpartition(".")[2]: value})
        else:
            DiffGen(model=tiny_diffgen_config, autoencoder_model=tiny_diffae_config, text_encoder=text_encoder_path,
                    text_encoder_max_length=value, sample_rate=16000)
