"""Config resolvers and the start-up checks that turn config mistakes into messages naming the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from omegaconf import DictConfig, OmegaConf

from main.errors import ConfigError  # in main.errors: the data loaders raise it too
from main.hub import package_dir
from main.nets.defaults import DIFFAE_CONFIG, DIFFGEN_CONFIG, merged_config
from main.nets.lengths import (
    diffae_audio_multiple,
    diffae_downsample_factor,
    diffgen_length_multiple,
    unet_length_multiple,
)
from main.nets.removed import REMOVED_OPTIONS, removed_option_error
from main.nets.rules import check_data_scale, check_text_length, check_text_source
from main.text import check_text_padding


def register_resolvers() -> None:
    """Register the project's OmegaConf resolvers (idempotent)."""
    if not OmegaConf.has_resolver("package_dir"):
        OmegaConf.register_new_resolver("package_dir", package_dir)


def model_class(cfg: DictConfig) -> Optional[type]:
    """The class `model._target_` names (None when there is no `_target_`)."""
    target = cfg.model.get("_target_")
    if target is None:
        return None
    from hydra.utils import get_class

    try:
        return get_class(str(target))
    except Exception as error:  # Hydra wraps import errors in its own exception types
        raise ConfigError(f"model._target_={target}: cannot import it ({error})") from error


def _model_kind(cfg: DictConfig) -> Optional[str]:
    """'dmae' or 'diffgen' by the class of `model._target_` (subclasses included), so renames keep the checks."""
    cls = model_class(cfg)
    if cls is None:
        return None
    from main.modules import DMAE, DiffGen

    kinds = {DMAE: "dmae", DiffGen: "diffgen"}
    return next((kind for base, kind in kinds.items() if issubclass(cls, base)), None)


def _require_file(value: Any, key: str, what: str) -> None:
    if value is not None and not Path(str(value)).expanduser().is_file():
        raise ConfigError(f"{key}={value}: {what} not found")


# Values that must be numbers (Hydra passes `model.lr=abc` through as a string); checked before anything is built.
NUMERIC_KEYS: dict[str, type] = {
    "model.lr": float, "model.eps": float, "model.weight_decay": float, "model.ema_beta": float,
    "model.ema_power": float, "model.ema_update_every": int, "model.ema_update_after_step": int,
    "model.lr_warmup_steps": int, "model.lr_min_ratio": float, "model.cfg_mask_proba": float,
    "model.preview_steps": int, "model.sample_rate": int,
    "model.bottleneck_penalty": float, "model.bottleneck_limit": float,
    "model.spectral_loss_weight": float, "model.spectral_loss_max_sigma": float,
    "model.rollout_proba": float,
    "datamodule.batch_size": int, "datamodule.num_workers": int, "datamodule.crop_length": int,
    "datamodule.sample_rate": int, "seed": int,
}


def _check_types(cfg: DictConfig) -> None:
    for key, kind in NUMERIC_KEYS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int and ok and float(value) != int(value):
            ok = False
        if not ok:
            raise ConfigError(f"{key}={value!r}: expected {'an integer' if kind is int else 'a number'}")
    betas = OmegaConf.select(cfg, "model.betas", default=None)
    if betas is not None and (len(betas) != 2 or not all(isinstance(b, (int, float)) for b in betas)):
        raise ConfigError(f"model.betas={list(betas)!r}: expected two numbers, e.g. [0.95, 0.999]")


def _reject_removed_options(cfg: DictConfig, kind: Optional[str]) -> None:
    """A removed option (main.nets.removed) set in the config, at any value, fails naming its key."""
    # where each group sits in the config
    sections = {"diffgen": "model.model" if kind == "diffgen" else None, "training": "model",
                "datamodule": "datamodule"}
    for group, removed in REMOVED_OPTIONS.items():
        path = sections[group]
        section = OmegaConf.select(cfg, path, default=None) if path else None
        for key, option in removed.items():
            if section is not None and key in section:
                raise ConfigError(removed_option_error(key, section[key], option, f"{path}."))


def validate_config(cfg: DictConfig) -> None:
    """Fail at start-up, naming the key, for wrong types, shapes the U-Nets cannot take, missing files and
    removed options."""
    _check_types(cfg)
    kind = _model_kind(cfg)
    _reject_removed_options(cfg, kind)
    data = cfg.datamodule
    crop = int(data.crop_length)
    if crop <= 0:
        raise ConfigError(f"datamodule.crop_length must be positive, got {crop}")
    if data.get("manifest") is not None:
        _require_file(data.manifest, "datamodule.manifest", "manifest (prepare one with `python -m main.data.prepare`)")
    if data.get("stream") is not None and not str(data.stream).startswith(("s3://", "gs://", "azure://", "hf://")):
        _require_file(Path(str(data.stream)) / "dataset.json", "datamodule.stream",
                      "streamed data set (write one with `python -m main.data.shard`)")
    if data.get("preencoded") is not None:
        _require_file(Path(str(data.preencoded)) / "meta.json", "datamodule.preencoded",
                      "pre-encoded data (make it with `python -m main.preencode`)")
    if data.get("captions") is not None:
        from main.data.captions import CaptionConfig

        try:
            CaptionConfig.from_mapping(OmegaConf.to_container(data.captions, resolve=True))
        except (ValueError, TypeError) as error:
            raise ConfigError(str(error)) from None
    if "sample_rate" in cfg.model and int(cfg.model.sample_rate) != int(data.sample_rate):
        raise ConfigError(
            f"model.sample_rate={cfg.model.sample_rate} differs from datamodule.sample_rate={data.sample_rate}"
        )
    if kind == "dmae":
        _validate_diffae(cfg.model.get("model") or {}, crop, "model.model")
        init = cfg.model.get("init_from")
        if init not in (None, "pretrained") and not Path(str(init)).expanduser().is_dir():
            _require_file(init, "model.init_from", "DiffAE weights file (or a folder in the hub's layout)")
        if not isinstance(cfg.model.get("freeze_encoder", False), bool):
            raise ConfigError(f"model.freeze_encoder must be true or false, got {cfg.model.freeze_encoder!r}")
        if cfg.model.get("bottleneck_penalty", 0.0) < 0:  # types: NUMERIC_KEYS
            raise ConfigError(f"model.bottleneck_penalty must be >= 0, got {cfg.model.bottleneck_penalty!r}")
        if not cfg.model.get("bottleneck_limit", 1.5) > 0:
            raise ConfigError(f"model.bottleneck_limit must be > 0, got {cfg.model.bottleneck_limit!r}")
        if cfg.model.get("spectral_loss_weight", 0.0) < 0:
            raise ConfigError(f"model.spectral_loss_weight must be >= 0, got {cfg.model.spectral_loss_weight!r}")
        if not 0 < cfg.model.get("spectral_loss_max_sigma", 0.3) <= 1:
            raise ConfigError("model.spectral_loss_max_sigma must be in (0, 1], got "
                              f"{cfg.model.spectral_loss_max_sigma!r}")
        if not 0 <= cfg.model.get("rollout_proba", 0.0) <= 1:
            raise ConfigError(f"model.rollout_proba must be in [0, 1], got {cfg.model.rollout_proba!r}")
        if cfg.model.get("rollout_proba", 0.0) and not cfg.model.get("spectral_loss_weight", 0.0):
            raise ConfigError("model.rollout_proba needs +model.spectral_loss_weight > 0: the rolled-out items learn "
                              "from the log-spectral loss alone")
    elif kind == "diffgen":
        ae_key = "model.autoencoder"
        ae = cfg.model.get("autoencoder")
        if ae not in (None, "pretrained"):
            _require_file(ae, ae_key, "DiffAE weights (export one with `python -m main.export`)")
        ae_model = dict(cfg.model.get("autoencoder_model") or {})
        factor = diffae_downsample_factor(_checked(DIFFAE_CONFIG, ae_model, "model.autoencoder_model"))
        if crop % factor:
            raise ConfigError(
                f"datamodule.crop_length={crop} must be a multiple of the DiffAE downsampling factor {factor}"
            )
        g = _checked(DIFFGEN_CONFIG, dict(cfg.model.get("model") or {}), "model.model")
        _check_lengths(g, ("channels", "factors", "items", "attentions", "cross_attentions"), "model.model")
        if not isinstance(g["patch_size"], int) or g["patch_size"] < 1:
            raise ConfigError(f"model.model.patch_size must be an integer >= 1, got {g['patch_size']!r}")
        if not isinstance(g["text_modulation"], bool):
            raise ConfigError(f"model.model.text_modulation must be true or false, got {g['text_modulation']!r}")
        multiple = diffgen_length_multiple(g)
        if (crop // factor) % multiple:
            raise ConfigError(
                f"datamodule.crop_length={crop} gives {crop // factor} latent frames, which the DiffGen U-Net "
                f"(model.model.patch_size {g['patch_size']} x model.model.factors {g['factors']}) cannot divide: "
                f"use a multiple of {factor * multiple} samples"
            )
        _apply_rule(check_text_padding, "model.model.", g["text_padding"])
        _apply_rule(check_text_source, "", g["text_padding"], data.get("preencoded") is not None)
        _apply_rule(check_text_length, "", int(cfg.model.get("text_encoder_max_length", 128)),
                    g["embedding_max_length"])
    ckpt = cfg.get("ckpt")
    if ckpt not in (None, "last"):
        _require_file(ckpt, "ckpt", "checkpoint to resume from")


def _apply_rule(rule: Callable[..., Any], key_prefix: str, *args: Any) -> None:
    """Run a rule of main.nets.rules / main.text (shared with model construction) as a start-up check: its
    ValueError becomes a ConfigError, the message prefixed with where the setting sits in the config."""
    try:
        rule(*args)
    except ValueError as error:
        raise ConfigError(f"{key_prefix}{error}") from error


def _checked(defaults: dict, overrides: dict, key: str) -> dict:
    try:
        return merged_config(defaults, overrides)
    except ValueError as error:
        raise ConfigError(f"{key}: {error}") from error


def _check_lengths(c: dict, names: tuple[str, ...], key: str) -> None:
    lengths = {name: len(c[name]) for name in names}
    if len(set(lengths.values())) != 1:
        raise ConfigError(f"{key}: {', '.join(names)} must have the same length, got {lengths}")


def _validate_diffae(model_cfg: Any, crop: int, key: str) -> None:
    c = _checked(DIFFAE_CONFIG, dict(model_cfg), key)
    _check_lengths(c, ("channels", "factors", "items"), key)
    _apply_rule(check_data_scale, f"{key}.", c)
    if not 0 <= c["inject_depth"] < len(c["channels"]):
        raise ConfigError(f"{key}.inject_depth={c['inject_depth']} must index {key}.channels")
    multiple = unet_length_multiple(c["factors"], c["lt_stride"])
    factor = diffae_downsample_factor(c)
    needed = diffae_audio_multiple(c)
    if crop % needed:
        raise ConfigError(
            f"datamodule.crop_length={crop} must be a multiple of {needed}: the DiffAE U-Net divides by "
            f"{multiple} ({key}.lt_stride x prod({key}.factors)) and the encoder by {factor}"
        )
    depth_factor = unet_length_multiple(c["factors"][: c["inject_depth"] + 1], c["lt_stride"])
    if depth_factor != factor:
        raise ConfigError(
            f"{key}.inject_depth={c['inject_depth']}: the U-Net runs at 1/{depth_factor} of the audio rate there "
            f"but the latent is 1/{factor}; pick the depth where they match"
        )
