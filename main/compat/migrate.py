"""Loading, resuming and converting checkpoints and weight files of the original bird-diffusion code (github.com/Max-Wurthmann/audiodiffusion).

Its `src/train/main/models.py` trains two LightningModules whose checkpoints hold, under `state_dict`:

    DMAE     model.*  (DiffusionAE)        ema.online_model.*, ema.ema_model.*, ema.initted, ema.step
    DiffGen  model.*  (DiffusionModel)     ema.*  as above,  text_encoder.* (frozen T5 encoder),
                                           diffae.* (the frozen DiffusionAE that made the latents)

and no `hyper_parameters`. Its `get_default_diffae/diffgen` load plain state dicts (`torch.save(state_dict)`).
Its DiffGen attends to the T5 padding tokens (no cross-attention mask), so its weights load here with
`text_padding: attend`. This module recognises these layouts, maps them onto this repository's (the U-Nets'
own keys are the same library's), reports what it kept and dropped, and refuses what it cannot map.

`train()` resumes them through `migrate_if_original`. A DiffGen resumes on the DiffAE stored in its checkpoint:
with `model.autoencoder=null` that DiffAE is written out and used; a `model.autoencoder` with other weights is
refused naming the setting (`+original_autoencoder=config` trains on it anyway). Tests run on checkpoints saved
by the original's own code (tests/fixtures/original/, made by the script there).

    python -m main.compat inspect original.ckpt
    python -m main.compat convert original.ckpt exports/diffgen --kind diffgen
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from main.compat.layout import Migration, convert_training_checkpoint, grouped_keys
from main.config import ConfigError, model_class
from main.files import PathLike
from main.nets.builders import BUILDERS, build_diffae
from main.nets.original import (ORIGINAL_EMA_UPDATE_EVERY, OriginalLayoutError, checkpoint_layout, layout_kind,
                                model_weights, original_config, read_checkpoint, strip_prefix)
from main.nets.pretrained import load_diffae
from main.nets.weights import load_model_state, model_state_dict, write_export

log = logging.getLogger(__name__)


def load_original_weights(module: torch.nn.Module, checkpoint: Mapping[str, Any]) -> Migration:
    """Weights-only start from an original checkpoint without optimizer state: the online and EMA U-Nets."""
    converted, _, migration = convert_training_checkpoint(checkpoint, num_params=0)
    module.load_state_dict(converted["state_dict"], strict=False)
    migration.notes.append("no optimizer state in the checkpoint: weights only, training restarts at step 0")
    return migration


# `+original_autoencoder=config`: resume an original DiffGen on model.autoencoder's latents even though the
# checkpoint carries another DiffAE (the default, `checkpoint`, refuses that).
AUTOENCODER_CHOICE_KEY = "original_autoencoder"
AUTOENCODER_CHOICES = ("checkpoint", "config")


def _same_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor]) -> bool:
    """Whether `model`'s state dict has exactly the keys of `state` and equal tensors."""
    own = model.state_dict()
    return set(own) == set(state) and all(torch.equal(own[k], state[k]) for k in own)


def _checkpoint_diffae(cfg: Any, diffae: Mapping[str, torch.Tensor]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The DiffAE an original DiffGen checkpoint carries, built with `model.autoencoder_model`, and that config."""
    from omegaconf import OmegaConf

    arch = OmegaConf.to_container(cfg.model.get("autoencoder_model") or {}, resolve=True)
    try:
        model = build_diffae(**arch)
        load_model_state(model, diffae)
    except (ValueError, RuntimeError) as error:
        raise ConfigError(f"model.autoencoder_model: the DiffAE stored in the checkpoint does not fit it ({error})"
                          ) from error
    return model, arch


def _autoencoder_notes(cfg: Any, diffae: Mapping[str, torch.Tensor], output_dir: PathLike) -> list[str]:
    """Resume an original DiffGen on the DiffAE its checkpoint carries: written out as `model.autoencoder` when
    that is null, accepted when it holds the same weights, refused naming the setting when it does not (unless
    `+original_autoencoder=config`). Returns notes for the log."""
    from omegaconf import open_dict

    choice = str(cfg.get(AUTOENCODER_CHOICE_KEY, "checkpoint"))
    if choice not in AUTOENCODER_CHOICES:
        raise ConfigError(f"{AUTOENCODER_CHOICE_KEY}={choice}: expected one of {AUTOENCODER_CHOICES}")
    configured = cfg.model.get("autoencoder")
    if configured is not None and choice == "config":
        return [(f"model.autoencoder={configured} replaces the DiffAE stored in the checkpoint "
                 f"(+{AUTOENCODER_CHOICE_KEY}=config): training continues on another DiffAE's latents")]
    if configured is None:
        model, arch = _checkpoint_diffae(cfg, diffae)
        path, _ = write_export(model_state_dict(model), {**original_config("diffae"), "model": arch},
                               Path(output_dir) / "original_diffae")
        with open_dict(cfg):
            cfg.model.autoencoder = str(path)
        return [f"model.autoencoder={path} (the DiffAE stored in the checkpoint)"]
    how = (f"Resume with model.autoencoder=null to use the checkpoint's DiffAE (the one its latents came from), or "
           f"add +{AUTOENCODER_CHOICE_KEY}=config to train on model.autoencoder's latents instead")
    source = "pretrained" if configured == "pretrained" else str(Path(str(configured)).expanduser())
    if source != "pretrained" and not Path(source).exists():
        raise ConfigError(f"model.autoencoder={configured}: not found, and the original checkpoint carries its own "
                          f"DiffAE. {how}.")
    if not _same_weights(load_diffae(source), diffae):  # loaded as the DiffGen module loads it
        raise ConfigError(f"model.autoencoder={configured} is not the DiffAE stored in the original checkpoint "
                          f"(other weights): the DiffGen would continue on another latent space. {how}.")
    return [f"model.autoencoder={configured} holds the DiffAE stored in the checkpoint"]


def adapt_config_for_original(cfg: Any, checkpoint: Mapping[str, Any], output_dir: PathLike) -> list[str]:
    """Before the module is built: make the run config fit an original checkpoint it resumes (a DiffGen attends to
    text padding and keeps the DiffAE stored in the checkpoint, see `_autoencoder_notes`). Returns notes."""
    from omegaconf import open_dict

    from main.modules import DMAE, DiffGen

    layout = checkpoint_layout(checkpoint)
    wanted = {"original-dmae": DMAE, "original-diffgen": DiffGen}.get(layout)
    cls = model_class(cfg)
    if wanted is None or cls is None or not issubclass(cls, wanted):
        raise ConfigError(f"ckpt is an {layout} checkpoint but model._target_ is {cfg.model.get('_target_')}")
    notes = []
    if layout == "original-diffgen":
        with open_dict(cfg):
            cfg.model.model = cfg.model.get("model") or {}
            cfg.model.model.text_padding = "attend"
        notes.append("model.model.text_padding=attend (the original attended to T5 padding tokens)")
        diffae = strip_prefix(checkpoint["state_dict"], "diffae.")
        if diffae:
            notes += _autoencoder_notes(cfg, diffae, output_dir)
    if cfg.model.get("ema_update_every", 1) != ORIGINAL_EMA_UPDATE_EVERY:  # its type is checked after this
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


@dataclass
class OriginalResume:
    """An original checkpoint that a training run resumes, its run config already adapted to it."""

    checkpoint: Mapping[str, Any]
    output_dir: Path

    def resume(self, module: Any) -> Optional[str]:
        """Once the module is built: the checkpoint path Lightning resumes from (None: weights-only start)."""
        path, migration = resume_from_original(module, self.checkpoint, self.output_dir)
        log.warning("%s", migration.summary())
        return path


def adopt_stored_autoencoder(checkpoint: Mapping[str, Any], cfg: Any) -> None:
    """Resuming one of this repository's DiffGen checkpoints with `model.autoencoder=null` (as after resuming an
    original checkpoint, whose DiffAE was written out): use the DiffAE file the checkpoint was trained with, which
    the checkpoint does not hold, instead of a randomly initialised one; refuse when that file is gone."""
    hparams = checkpoint.get("hyper_parameters") or {}
    stored = hparams.get("autoencoder") if hparams.get("kind") == "diffgen" else None
    if stored is None or "autoencoder" not in cfg.model or cfg.model.autoencoder is not None:
        return
    if not Path(str(stored)).is_file():
        raise ConfigError(f"model.autoencoder=null: the checkpoint was trained with the DiffAE {stored}, which is "
                          "not found; set model.autoencoder to that DiffAE's file")
    cfg.model.autoencoder = str(stored)
    log.warning("resuming: model.autoencoder=%s (the DiffAE the checkpoint was trained with)", stored)


def migrate_if_original(ckpt_path: Optional[str], cfg: Any) -> Optional[OriginalResume]:
    """For `train()`, before the config is validated and the module built: when `ckpt_path` is a checkpoint of the
    original bird-diffusion code, adapt `cfg` to it (logging each change) and return what resumes it; None for
    anything else (no checkpoint, this repository's, or a missing file, which the config check reports). A DiffGen
    checkpoint of this repository resumed with `model.autoencoder=null` gets the DiffAE it was trained with."""
    if ckpt_path is None or not Path(ckpt_path).is_file():
        return None
    checkpoint = read_checkpoint(ckpt_path)
    layout = checkpoint_layout(checkpoint)
    if layout == "ours":
        adopt_stored_autoencoder(checkpoint, cfg)
        return None
    if not layout.startswith("original"):
        return None
    output_dir = Path(str(cfg.paths.output_dir))
    for note in adapt_config_for_original(cfg, checkpoint, output_dir):
        log.warning("resuming an original bird-diffusion checkpoint: %s", note)
    return OriginalResume(checkpoint, output_dir)


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
