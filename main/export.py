"""Export the EMA model of a training checkpoint as `.safetensors` + JSON config.

    python -m main.export logs/dmae/runs/<run>/checkpoints/last.ckpt exports/diffae

writes `exports/diffae.safetensors` and `exports/diffae.json`, which `get_default_diffae(...)`,
`get_default_diffgen(...)` and `get_default_combined_sampler(...)` read back.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

from main.files import PathLike
from main.nets.original import checkpoint_layout, layout_kind, read_checkpoint
from main.nets.weights import load_model, model_state_dict, write_export


def export_checkpoint(checkpoint: PathLike, output: PathLike, half: bool = False,
                      extra: Optional[dict[str, Any]] = None) -> tuple[Path, Path]:
    """Write the checkpoint's EMA weights to `<output>.safetensors` (float16 with `half`: half the size, loaded
    back into float32 models) and its config (plus `extra` provenance) to `<output>.json`."""
    checkpoint = Path(checkpoint)
    raw = read_checkpoint(checkpoint)
    kind = checkpoint_kind(raw, checkpoint)
    model, config = load_model(checkpoint, kind)
    tensors = model_state_dict(model)
    # The full architecture (the seed's defaults merged with the checkpoint's overrides), not only the overrides.
    config["model"] = dict(model.config)
    config.update(source_checkpoint=checkpoint.name, global_step=int(raw.get("global_step", 0)),
                  **(extra or {}))
    if "training_files" in raw:  # each training recording's path, species and SHA-256
        config["trained_on"] = raw["training_files"]
    return write_export(tensors, config, output, half)


def checkpoint_kind(raw: dict[str, Any], path: PathLike) -> str:
    """'diffae' or 'diffgen': what a training checkpoint (this repository's or the original's) holds."""
    layout = checkpoint_layout(raw)
    kind = raw["hyper_parameters"]["kind"] if layout == "ours" else layout_kind(layout)
    if kind is None:
        raise ValueError(f"{path} is a plain state dict, not a training checkpoint: convert it with "
                         "`python -m main.compat convert FILE OUTPUT --kind diffae|diffgen`")
    return kind


def main(argv: Optional[list[str]] = None) -> Any:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="Lightning .ckpt written by train.py")
    parser.add_argument("output", nargs="?", help="output path without suffix (default: beside the checkpoint)")
    parser.add_argument("--fp16", action="store_true", help="store float16 weights (half the size)")
    parser.add_argument("--note", action="append", default=[], metavar="KEY=VALUE",
                        help="provenance recorded in the JSON config (repeatable), e.g. command=...")
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    if args.output is None:
        kind = checkpoint_kind(read_checkpoint(checkpoint), checkpoint)
        output = checkpoint.parent / f"{kind}_ema"
    else:
        output = Path(args.output)
    notes = dict(note.split("=", 1) for note in args.note if "=" in note)
    weights, sidecar = export_checkpoint(checkpoint, output, half=args.fp16, extra={"provenance": notes} if notes
                                         else None)
    print(f"wrote {weights} and {sidecar}")
    return weights


if __name__ == "__main__":
    main()
