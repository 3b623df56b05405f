"""The original bird-diffusion code's weight files as the networks read them: load one without unpickling code,
recognise its layout, take the weights to sample with and the configuration they were trained with.

Mapping the original's training checkpoints onto this repository's (optimizer, EMA, what is dropped) is
`main.compat`'s, which builds on this module; the networks never import `main.compat`.
"""

from __future__ import annotations

import pickle
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from main.files import PathLike
from main.nets import defaults

# What the original used where its files say nothing (t5-base, 32 kHz, ema-pytorch's EMA cadence).
ORIGINAL_TEXT_ENCODER = "t5-base"
ORIGINAL_SAMPLE_RATE = 32000
ORIGINAL_EMA_UPDATE_EVERY = 10  # ema-pytorch's default, which the original kept


class OriginalLayoutError(ValueError):
    """A file that looks like the original's but holds something that cannot be mapped."""


def read_checkpoint(path: PathLike) -> Any:
    """`torch.load` without unpickling code (memory-mapped where the format allows, so looking at a large
    checkpoint is cheap); a file with other pickled objects is refused with the command that converts it."""
    try:
        try:
            return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:  # the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(error):
                raise
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise OriginalLayoutError(
            f"{path} holds pickled Python objects (e.g. hyper-parameters of an old Lightning version), which are "
            "not loaded without trust. If you trust the file, convert it once with "
            f"`python -m main.compat convert {path} OUTPUT --kind diffae|diffgen --trust-pickle`."
        ) from error


def checkpoint_layout(checkpoint: Mapping[str, Any]) -> str:
    """'ours' (a training checkpoint of this repository), 'original-dmae' / 'original-diffgen' (the original's
    Lightning checkpoints) or 'state-dict' (a plain state dict, as the original's `get_default_*` read)."""
    if "state_dict" not in checkpoint:
        return "state-dict"
    hparams = checkpoint.get("hyper_parameters")
    if isinstance(hparams, Mapping) and hparams.get("kind") in ("diffae", "diffgen"):
        return "ours"
    keys = checkpoint["state_dict"].keys()
    if any(k.startswith("text_encoder.") for k in keys):
        return "original-diffgen"
    if any(k.startswith("model.") for k in keys) and any(k.startswith("ema.") for k in keys):
        # Without a text encoder both hold a U-Net under model.*; only the DiffusionAE has an encoder.
        return "original-dmae" if any(k.startswith("model.encoder.") for k in keys) else "original-diffgen"
    raise OriginalLayoutError(
        "unrecognised checkpoint: no hyper_parameters.kind (this repository) and no model.*/ema.* weights (the "
        f"original bird-diffusion code); first keys: {list(keys)[:5]}"
    )


def layout_kind(layout: str) -> Optional[str]:
    """The model kind a checkpoint layout holds ('diffae' / 'diffgen'), None when the layout does not say."""
    return {"original-dmae": "diffae", "original-diffgen": "diffgen"}.get(layout)


def original_config(kind: str) -> dict[str, Any]:
    """The export config of a model from the original: seed architecture, its text encoder and padding."""
    config: dict[str, Any] = {"kind": kind, "model": {}, "sample_rate": ORIGINAL_SAMPLE_RATE,
                              "origin": "original bird-diffusion"}
    if kind == "diffgen":

        # The original padded its text to the U-Net's embedding_max_length (128 at seed size).
        config["model"] = {"text_padding": "attend"}
        config.update(text_encoder=ORIGINAL_TEXT_ENCODER,
                      text_encoder_max_length=int(defaults.DIFFGEN_CONFIG["embedding_max_length"]))
    return config


def strip_prefix(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The entries of `state` under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def model_weights(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """The weights to sample with from any state dict the original wrote: the EMA model of a module or of an EMA
    wrapper, else the online model, else the dict itself. Returns them and the prefix they came from."""
    for prefix in ("ema.ema_model.", "ema_model.", "model."):
        weights = strip_prefix(state, prefix)
        if weights:
            return weights, prefix
    return dict(state), ""
