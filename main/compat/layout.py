"""Layouts of the original bird-diffusion checkpoints: recognise them and map their keys (no model building)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from main.files import PathLike
from main.nets import defaults

# What the original used where its files say nothing (t5-base, 32 kHz, ema-pytorch's EMA cadence).
ORIGINAL_TEXT_ENCODER = "t5-base"
ORIGINAL_SAMPLE_RATE = 32000
ORIGINAL_EMA_UPDATE_EVERY = 10  # ema-pytorch's default, which the original kept

# state_dict prefixes of the original's LightningModules and what becomes of them here.
KEPT_PREFIXES = ("model.", "ema.ema_model.")
EMA_BUFFERS = ("ema.initted", "ema.step")
DROPPED_PREFIXES = {
    "ema.online_model.": "a second copy of model.* (ema-pytorch's online model)",
    "text_encoder.": "the frozen text encoder, loaded here by name",
    "diffae.": "the frozen DiffAE, used here as model.autoencoder",
}


class OriginalLayoutError(ValueError):
    """A file that looks like the original's but holds something that cannot be mapped."""


@dataclass
class Migration:
    """What a conversion kept, dropped and assumed, to show the user."""

    layout: str
    kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for the log."""
        lines = [f"{self.layout}: kept " + ", ".join(f"{k} ({n} tensors)" for k, n in self.kept.items())]
        lines += [f"  dropped {k} ({n} tensors): {DROPPED_PREFIXES.get(k, '')}" for k, n in self.dropped.items()]
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


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


def grouped_keys(keys: Any) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """Counts of kept and dropped keys by prefix, and the keys no known prefix covers."""
    kept: dict[str, int] = {}
    dropped: dict[str, int] = {}
    unknown: list[str] = []
    for key in keys:
        prefix = next((p for p in KEPT_PREFIXES if key.startswith(p)), None)
        if prefix or key in EMA_BUFFERS:
            kept[prefix or "ema buffers"] = kept.get(prefix or "ema buffers", 0) + 1
            continue
        prefix = next((p for p in DROPPED_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        else:
            dropped[prefix] = dropped.get(prefix, 0) + 1
    return kept, dropped, unknown


def _map_optimizer(optimizer_state: dict[str, Any], num_params: int, migration: Migration) -> dict[str, Any]:
    """The original DMAE optimised `self.parameters()`: its U-Net's followed by the EMA copy's, which never get a
    gradient. Keep the first `num_params` (the U-Net's, in the same order as here); refuse anything else."""
    groups = optimizer_state["param_groups"]
    if len(groups) != 1:
        raise OriginalLayoutError(f"expected one optimizer parameter group, found {len(groups)}")
    ids = list(groups[0]["params"])
    if len(ids) < num_params:
        raise OriginalLayoutError(
            f"the checkpoint's optimizer holds {len(ids)} parameters, the model has {num_params}: other architecture?"
        )
    kept_ids = ids[:num_params]
    extra = [i for i in ids[num_params:] if i in optimizer_state["state"]]
    if extra:
        raise OriginalLayoutError(f"optimizer state for {len(extra)} parameters beyond the model's {num_params}")
    if len(ids) > num_params:
        migration.notes.append(f"optimizer: kept the state of the {num_params} trained parameters, dropped "
                               f"{len(ids) - num_params} EMA-copy entries that never had a gradient")
    state = {i: s for i, s in optimizer_state["state"].items() if i in set(kept_ids)}
    return {"state": state, "param_groups": [{**groups[0], "params": kept_ids}]}


def convert_training_checkpoint(checkpoint: Mapping[str, Any], num_params: int
                                ) -> tuple[dict[str, Any], dict[str, Tensor], Migration]:
    """An original DMAE/DiffGen Lightning checkpoint in this repository's layout (model, EMA, optimizer, loop
    progress), plus the DiffAE weights a DiffGen checkpoint carried (empty otherwise) and the report."""
    layout = checkpoint_layout(checkpoint)
    if not layout.startswith("original"):
        raise OriginalLayoutError(f"not a checkpoint of the original bird-diffusion code (layout {layout})")
    state = checkpoint["state_dict"]
    kept, dropped, unknown = grouped_keys(state.keys())
    if unknown:
        raise OriginalLayoutError(f"{len(unknown)} keys cannot be mapped: {unknown[:5]}")
    if "model." not in kept or "ema.ema_model." not in kept:
        raise OriginalLayoutError("the checkpoint lacks model.* or ema.ema_model.* weights")
    migration = Migration(layout, kept, dropped)
    converted = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
    converted["state_dict"] = {k: v for k, v in state.items()
                               if k.startswith(KEPT_PREFIXES) or k in EMA_BUFFERS}
    optimizers = checkpoint.get("optimizer_states") or []
    if optimizers:
        converted["optimizer_states"] = [_map_optimizer(optimizers[0], num_params, migration)]
    converted.setdefault("lr_schedulers", [])
    converted["converted_from"] = layout
    return converted, strip_prefix(state, "diffae."), migration
