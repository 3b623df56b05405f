"""Loading, resuming and converting checkpoints and weight files of the original bird-diffusion code (github.com/Max-Wurthmann/audiodiffusion).

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
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from main.compat.layout import (ORIGINAL_EMA_UPDATE_EVERY, Migration, OriginalLayoutError, checkpoint_layout,
                                convert_training_checkpoint, grouped_keys, layout_kind, model_weights,
                                original_config, read_checkpoint, strip_prefix)
from main.export import write_export
from main.files import PathLike
from main.nets.builders import BUILDERS, build_diffae
from main.nets.weights import load_model_state, model_state_dict


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
        diffae = strip_prefix(checkpoint["state_dict"], "diffae.")
        if cfg.model.get("autoencoder") is None and diffae:

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
    parser = argparse.ArgumentParser(prog="python -m main.compat", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
            kept, dropped, unknown = grouped_keys(raw["state_dict"].keys())
            report.update(kept=kept, dropped=dropped, unmappable=unknown[:10],
                          global_step=raw.get("global_step"), has_optimizer=bool(raw.get("optimizer_states")))
        print(json.dumps(report, indent=2))
        return
    path, migration = convert_file(args.file, args.output, args.kind, args.trust_pickle, args.fp16)
    print(migration.summary())
    print(f"wrote {path} and {path.with_suffix('.json')}")


if __name__ == "__main__":
    main()
