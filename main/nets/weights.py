"""Weight files: deduplicated state dicts, writing exports (`write_export`, which every export and conversion goes
through), and loading exports, Lightning checkpoints and the original's files."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Optional

from audio_diffusion_pytorch import DiffusionAE, DiffusionModel
from torch import Tensor, nn

from main.files import PathLike
from main.nets.builders import BUILDERS, build_diffae, build_diffgen
from main.nets.original import checkpoint_layout, layout_kind, model_weights, original_config, read_checkpoint
from main.nets.removed import drop_removed_from_saved
from main.text import portable_text_encoder


def _tied_groups(model: nn.Module) -> list[list[str]]:
    """State-dict names that share storage (DiffusionModel registers its U-Net as `net`, `diffusion.net` and
    `sampler.net`; a-unet repeats some layers), each group sorted with the preferred name first."""
    groups: dict[tuple, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
        groups.setdefault(key, []).append(name)
    return [sorted(names, key=lambda n: (n.startswith(("diffusion.", "sampler.")), n)) for names in groups.values()]


def model_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict with each shared tensor stored once (what exported files hold)."""
    state = model.state_dict()
    return {names[0]: state[names[0]].detach().contiguous() for names in _tied_groups(model)}


def load_model_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load a full or deduplicated state dict; a key missing for any other reason is an error."""
    result = model.load_state_dict(dict(state), strict=False)
    present = set(state)
    tied_ok = {n for names in _tied_groups(model) if present.intersection(names) for n in names}
    missing = [k for k in result.missing_keys if k not in tied_ok]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"weights do not fit the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]} "
            "(was the file saved from a model with other hyper-parameters?)"
        )


def write_export(tensors: dict[str, Tensor], config: dict[str, Any], output: PathLike,
                 half: bool = False) -> tuple[Path, Path]:
    """Write `<output>.safetensors` (float16 with `half`) and `<output>.json` (the config, also embedded)."""
    from safetensors.torch import save_file

    from main.checkpointing import non_finite_tensors  # imports Lightning: only when writing

    bad = non_finite_tensors(tensors)
    if bad:
        raise ValueError(f"non-finite weights: {bad[:5]}")
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
        if non_finite_tensors(tensors):
            raise ValueError("weights overflow float16; export without --fp16")
    config = {**config, "dtype": "float16" if half else "float32"}
    if "text_encoder" in config:  # a package's folder as a reference that resolves on any machine
        config["text_encoder"] = portable_text_encoder(str(config["text_encoder"]))
    output = Path(output)
    if output.suffix in (".safetensors", ".json"):
        output = output.with_suffix("")
    output.parent.mkdir(parents=True, exist_ok=True)
    weights, sidecar = output.with_suffix(".safetensors"), output.with_suffix(".json")
    save_file(tensors, str(weights), metadata={"config": json.dumps(config)})
    sidecar.write_text(json.dumps(config, indent=2) + "\n")
    return weights, sidecar


def load_model_file(path: PathLike, kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read an exported `.safetensors` (+ JSON config), a Lightning `.ckpt` (its EMA weights) or a checkpoint or
    state dict of the original bird-diffusion code (read by `main.nets.original`), never unpickling.

    Returns the model's state dict and its saved configuration (`{}` when the file carries none), without the
    removed options it may hold at their old default (`main.nets.removed`; holding one on is an error).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        state = load_file(str(path))
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            config = json.loads(sidecar.read_text())
        else:
            with safe_open(str(path), framework="pt") as f:
                config = json.loads((f.metadata() or {}).get("config", "{}"))
        if config.get("kind", kind) != kind:
            raise ValueError(f"{path} holds a {config['kind']} model, not a {kind}")
        return state, drop_removed_from_saved(config, kind, path)
    checkpoint = read_checkpoint(path)
    layout = checkpoint_layout(checkpoint)
    if layout != "ours":  # the original bird-diffusion code's checkpoint or state dict
        found = layout_kind(layout)
        if found not in (None, kind):
            raise ValueError(f"{path} is the original's {found} checkpoint, not a {kind}")
        state, prefix = model_weights(checkpoint.get("state_dict", checkpoint))
        config = original_config(kind)
        logging.getLogger(__name__).warning(
            "%s: %s layout, %d tensors from %s; loaded as the original's %s (%s)", path, layout, len(state),
            prefix + "*" if prefix else "the whole file", kind, config["model"] or "seed architecture")
        return state, config
    prefix = "ema.ema_model."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"{path} has no EMA weights (keys starting with {prefix!r})")
    hparams = checkpoint.get("hyper_parameters", {})
    if hparams.get("kind", kind) != kind:
        raise ValueError(f"{path} is a {hparams['kind']} checkpoint, not a {kind}")
    return state, export_config(drop_removed_from_saved(hparams, kind, path))


def export_config(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-serialisable description of a model stored beside exported weights."""
    keys = ("kind", "model", "sample_rate", "text_encoder", "text_encoder_max_length")
    return {k: hparams[k] for k in keys if k in hparams}


def load_model(path: PathLike, kind: str) -> tuple[nn.Module, dict[str, Any]]:
    """Build a `kind` ('diffae' or 'diffgen') model with the hyper-parameters saved in `path` and load its
    weights (the EMA weights of a checkpoint); returns the model and its saved config."""
    state, config = load_model_file(path, kind)
    model = BUILDERS[kind](**config.get("model", {}))
    load_model_state(model, state)
    return model, config


def get_default_diffae(state_dict_file: Optional[PathLike] = None) -> DiffusionAE:
    """The seed DiffAE (185.1M params, untrained) or, given `state_dict_file`, the DiffAE saved in that file.

    Despite the name, with a file this loads it (export, checkpoint or original's file, see `load_model`) and
    builds the architecture saved with it, which need not be the seed's.
    """
    return build_diffae() if state_dict_file is None else load_model(state_dict_file, "diffae")[0]


def get_default_diffgen(state_dict_file: Optional[PathLike] = None) -> DiffusionModel:
    """The seed DiffGen (562.6M params, untrained) or, given `state_dict_file`, the DiffGen saved in that file.

    Despite the name, with a file this loads it (see `load_model`) with the architecture saved with it.
    """
    return build_diffgen() if state_dict_file is None else load_model(state_dict_file, "diffgen")[0]
