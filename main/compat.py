"""Checkpoints and weight files of the original bird-diffusion code (github.com/Max-Wurthmann/audiodiffusion).

Its `train/main/models.py` trains two LightningModules whose checkpoints hold, under `state_dict`:

    DMAE     model.*  (DiffusionAE)        ema.online_model.*, ema.ema_model.*, ema.initted, ema.step
    DiffGen  model.*  (DiffusionModel)     ema.*  as above,  text_encoder.* (frozen T5 encoder),
                                           diffae.* (the frozen DiffusionAE that made the latents)

and no `hyper_parameters`. Its `get_default_diffae/diffgen` load plain state dicts (`torch.save(state_dict)`).
Its DiffGen attends to the T5 padding tokens (no cross-attention mask), so its weights load here with
`text_padding: attend`. This module recognises these layouts, maps them onto this repository's (the U-Nets'
own keys are the same library's), reports what it kept and dropped, and refuses what it cannot map.

    python -m main.compat inspect original.ckpt
    python -m main.compat convert original.ckpt exports/diffgen --kind diffgen
"""

from __future__ import annotations

import argparse
import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor

from main.files import PathLike

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
        from main.nets import defaults

        # The original padded its text to the U-Net's embedding_max_length (128 at seed size).
        config["model"] = {"text_padding": "attend"}
        config.update(text_encoder=ORIGINAL_TEXT_ENCODER,
                      text_encoder_max_length=int(defaults.DIFFGEN_CONFIG["embedding_max_length"]))
    return config


def _strip(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def model_weights(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """The weights to sample with from any state dict the original wrote: the EMA model of a module or of an EMA
    wrapper, else the online model, else the dict itself. Returns them and the prefix they came from."""
    for prefix in ("ema.ema_model.", "ema_model.", "model."):
        weights = _strip(state, prefix)
        if weights:
            return weights, prefix
    return dict(state), ""


def _grouped(keys: Any) -> tuple[dict[str, int], dict[str, int], list[str]]:
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
    kept, dropped, unknown = _grouped(state.keys())
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
    return converted, _strip(state, "diffae."), migration


def load_original_weights(module: torch.nn.Module, checkpoint: Mapping[str, Any]) -> Migration:
    """Weights-only start from an original checkpoint without optimizer state: the online and EMA U-Nets."""
    converted, _, migration = convert_training_checkpoint(checkpoint, num_params=0)
    module.load_state_dict(converted["state_dict"], strict=False)
    migration.notes.append("no optimizer state in the checkpoint: weights only, training restarts at step 0")
    return migration


def adapt_config_for_original(cfg: Any, checkpoint: Mapping[str, Any], output_dir: PathLike) -> list[str]:
    """Before the module is built: make the run config fit an original checkpoint it resumes (a DiffGen attends to
    text padding; without `model.autoencoder` it uses the DiffAE stored in the checkpoint). Returns notes."""
    from omegaconf import OmegaConf, open_dict

    from main.export import write_export

    layout = checkpoint_layout(checkpoint)
    target = str(cfg.model.get("_target_", ""))
    wanted = {"main.modules.DMAE": "original-dmae", "main.modules.DiffGen": "original-diffgen"}.get(target)
    if wanted != layout:
        raise OriginalLayoutError(f"ckpt is an {layout} checkpoint but model._target_ is {target}")
    notes = []
    if layout == "original-diffgen":
        with open_dict(cfg):
            cfg.model.model = cfg.model.get("model") or {}
            cfg.model.model.text_padding = "attend"
        notes.append("model.model.text_padding=attend (the original attended to T5 padding tokens)")
        diffae = _strip(checkpoint["state_dict"], "diffae.")
        if cfg.model.get("autoencoder") is None and diffae:
            from main.nets.builders import build_diffae
            from main.nets.weights import load_model_state, model_state_dict

            arch = OmegaConf.to_container(cfg.model.get("autoencoder_model") or {}, resolve=True)
            model = build_diffae(**arch)
            load_model_state(model, diffae)
            path, _ = write_export(model_state_dict(model), {**original_config("diffae"), "model": arch},
                                   Path(output_dir) / "original_diffae")
            with open_dict(cfg):
                cfg.model.autoencoder = str(path)
            notes.append(f"model.autoencoder={path} (the DiffAE stored in the checkpoint)")
    if int(cfg.model.get("ema_update_every", 1)) != ORIGINAL_EMA_UPDATE_EVERY:
        notes.append(f"model.ema_update_every={cfg.model.get('ema_update_every', 1)} (the original updated its EMA "
                     f"every {ORIGINAL_EMA_UPDATE_EVERY} steps)")
    return notes


def resume_from_original(module: Any, checkpoint: Mapping[str, Any], output_dir: PathLike
                         ) -> tuple[Optional[str], Migration]:
    """The checkpoint path Lightning resumes from for an original checkpoint (converted into `output_dir`), or
    None after a weights-only start when it has no optimizer state."""
    if not checkpoint.get("optimizer_states"):
        return None, load_original_weights(module, checkpoint)
    num_params = sum(1 for p in module.model.parameters() if p.requires_grad)
    converted, _, migration = convert_training_checkpoint(checkpoint, num_params)
    path = Path(output_dir) / "converted_original.ckpt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(converted, str(path))
    return str(path), migration


def convert_file(source: PathLike, output: PathLike, kind: Optional[str] = None,
                 trust_pickle: bool = False, half: bool = False) -> tuple[Path, Migration]:
    """Write any weight file of the original (checkpoint, state dict, a trusted pickle of either or of a module) as an export
    (`<output>.safetensors` + JSON) that every model loader here reads."""
    from main.export import write_export
    from main.nets.builders import BUILDERS
    from main.nets.weights import load_model_state, model_state_dict

    if trust_pickle:
        raw = torch.load(str(source), map_location="cpu", weights_only=False)
        if isinstance(raw, torch.nn.Module):
            raw = raw.state_dict()
    else:
        raw = read_checkpoint(source)
    layout = checkpoint_layout(raw)
    if layout == "ours":
        raise OriginalLayoutError(f"{source} is a checkpoint of this repository: use `python -m main.export`")
    kind = kind or layout_kind(layout)
    if kind not in BUILDERS:
        raise OriginalLayoutError(f"{source}: say which model it holds with --kind diffae|diffgen")
    weights, prefix = model_weights(raw.get("state_dict", raw))
    migration = Migration(layout, {prefix or "all keys": len(weights)})
    config = original_config(kind)
    model = BUILDERS[kind](**config["model"])
    load_model_state(model, weights)
    if kind == "diffgen":
        migration.notes.append("text_padding=attend: the original attended to T5 padding tokens")
    config.update(source_checkpoint=Path(source).name, global_step=int(raw.get("global_step", 0)))
    weights_path, _ = write_export(model_state_dict(model), config, output, half)
    return weights_path, migration


def main(argv: Optional[list[str]] = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser("inspect", help="say what a file holds and how it maps")
    inspect.add_argument("file")
    convert = sub.add_parser("convert", help="write an original weight file as an export (.safetensors + .json)")
    convert.add_argument("file")
    convert.add_argument("output", help="output path without suffix")
    convert.add_argument("--kind", choices=("diffae", "diffgen"), help="needed for plain state dicts")
    convert.add_argument("--trust-pickle", action="store_true",
                         help="unpickle objects other than tensors (runs code from the file: trusted files only)")
    convert.add_argument("--fp16", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "inspect":
        raw = read_checkpoint(args.file)
        layout = checkpoint_layout(raw)
        report: dict[str, Any] = {"layout": layout, "kind": layout_kind(layout)}
        if "state_dict" in raw:
            kept, dropped, unknown = _grouped(raw["state_dict"].keys())
            report.update(kept=kept, dropped=dropped, unmappable=unknown[:10],
                          global_step=raw.get("global_step"), has_optimizer=bool(raw.get("optimizer_states")))
        print(json.dumps(report, indent=2))
        return
    path, migration = convert_file(args.file, args.output, args.kind, args.trust_pickle, args.fp16)
    print(migration.summary())
    print(f"wrote {path} and {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
