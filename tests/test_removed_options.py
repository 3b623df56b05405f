"""Removed options (main/nets/removed.py): files written before still load when they hold them off, are refused
naming the key when they hold them on, and a config that sets one fails at start-up naming it."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch
from hydra.errors import ConfigCompositionException

from main.config import ConfigError, validate_config
from main.diffusion import sample
from main.models import build_diffgen, load_model, model_state_dict
from main.nets.removed import drop_removed_from_saved
from main.sample import main as sample_main
from tests.conftest import save_export
from tests.test_train_cli import compose_exp

# (removed DiffGen architecture key, its old default, a value holding the removed behaviour)
SAVED_MODEL_OPTIONS = [("rotary_positions", False, True), ("data_scale", 1.0, 0.5), ("self_condition", False, True)]
# (experiment, config key, a value)
CONFIG_OPTIONS = [("diffgen_tiny", "model.model.rotary_positions", "false"),
                  ("diffgen_tiny", "model.model.data_scale", "0.5"),
                  ("diffgen_tiny", "model.model.self_condition", "false"),
                  ("dmae_tiny", "datamodule.loudness_normalize", "true"),
                  ("diffgen_tiny", "datamodule.target_dbfs", "-14"),
                  ("dmae_tiny", "model.sigma_distribution", "logit-normal"),
                  ("diffgen_tiny", "model.sigma_mean", "-1.0")]


def _checkpoint(path, model: torch.nn.Module, hparams: dict[str, Any]) -> Any:
    """A training checkpoint of this repository holding `model` as its EMA weights."""
    state = {f"ema.ema_model.{k}": v for k, v in model_state_dict(model).items()}
    torch.save({"state_dict": state, "hyper_parameters": hparams, "global_step": 0}, str(path))
    return path


@pytest.mark.parametrize("key,default,on", SAVED_MODEL_OPTIONS)
def test_saved_files_with_a_removed_option_load_when_off_and_are_refused_when_on(key, default, on, tmp_path,
                                                                                 tiny_diffgen_config):
    torch.manual_seed(0)
    model = build_diffgen(**tiny_diffgen_config)
    for value, name in ((default, "off"), (on, "on")):
        saved = {"kind": "diffgen", "model": {**model.config, key: value}, "sample_rate": 16000}
        files = [save_export(model, tmp_path / f"export_{name}", saved),
                 _checkpoint(tmp_path / f"{name}.ckpt", model, saved)]
        for path in files:
            if value == default:
                loaded, config = load_model(path, "diffgen")
                assert key not in config["model"] and loaded.config == model.config
                assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
            else:
                with pytest.raises(ValueError, match=rf"{path.name}: diffgen model\.{key}=.*removed"):
                    load_model(path, "diffgen")


def test_removed_training_settings_are_checked_when_a_module_is_rebuilt_and_ignored_by_weight_loading(
        tmp_path, tiny_diffgen_config):
    """A checkpoint's noise-level settings: uniform (with any sigma_mean / sigma_std, which only parametrised
    logit-normal) is dropped, logit-normal refused when its LightningModule is rebuilt; its weights load either way."""
    old = {"kind": "diffgen", "model": dict(tiny_diffgen_config), "lr": 1e-4, "sigma_distribution": "uniform",
           "sigma_mean": -1.0, "sigma_std": 1.0}
    assert drop_removed_from_saved(old, "diffgen", training=True) == {"kind": "diffgen", "model": tiny_diffgen_config,
                                                                      "lr": 1e-4}
    logit_normal = {**old, "sigma_distribution": "logit-normal"}
    with pytest.raises(ValueError, match=r"old\.ckpt: sigma_distribution='logit-normal': this option was removed"):
        drop_removed_from_saved(logit_normal, "diffgen", "old.ckpt", training=True)
    torch.manual_seed(0)
    model = build_diffgen(**tiny_diffgen_config)
    loaded, config = load_model(_checkpoint(tmp_path / "old.ckpt", model, logit_normal), "diffgen")
    assert "sigma_distribution" not in config and loaded.config == model.config


@pytest.mark.parametrize("exp,key,value", CONFIG_OPTIONS)
def test_a_removed_option_in_the_config_fails_at_startup_naming_it(exp, key, value, tmp_path):
    with pytest.raises(ConfigCompositionException) as refused:  # not in the composed config: Hydra refuses it
        compose_exp(exp, f"paths.root_dir={tmp_path}", f"{key}={value}")
    assert key in str(refused.value) or key in str(refused.value.__cause__)
    with pytest.raises(ConfigError, match=re.escape(key) + "=.*this option was removed"):
        validate_config(compose_exp(exp, f"paths.root_dir={tmp_path}", f"+{key}={value}"))


def test_the_removed_ancestral_sampler_is_refused(capsys):
    with pytest.raises(ValueError, match="unknown sampler 'ancestral'"):
        sample(lambda x, sigmas: x, torch.zeros(1, 1, 4), 2, "ancestral")
    with pytest.raises(SystemExit):
        sample_main(["--diffae", "a", "--diffgen", "b", "--prompt", "p", "--sampler", "ancestral"])
    assert "invalid choice: 'ancestral'" in capsys.readouterr().err
