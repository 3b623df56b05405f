"""The original bird-diffusion code's training checkpoints mapped onto this repository's layout: which keys are kept
and dropped, the optimizer state, and the report of what a conversion did (no model building). Reading and
recognising the original's files is `main.nets.original`'s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import Tensor

from main.nets.original import OriginalLayoutError, checkpoint_layout, strip_prefix

# state_dict prefixes of the original's LightningModules and what becomes of them here.
KEPT_PREFIXES = ("model.", "ema.ema_model.")
EMA_BUFFERS = ("ema.initted", "ema.step")
DROPPED_PREFIXES = {
    "ema.online_model.": "a second copy of model.* (ema-pytorch's online model)",
    "text_encoder.": "the frozen text encoder, loaded here by name",
    "diffae.": "the frozen DiffAE, used here as model.autoencoder",
}


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
