"""Options that were removed because they did not help (docs/options.md, "Removed options").

Checkpoints and exports written before may still hold them in their saved hyper-parameters: at their old default
(off) they are dropped when loaded; holding the removed behaviour, loading fails naming the key. A config that sets
one fails at start-up (`main.config`), naming where it sits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional


@dataclass(frozen=True)
class RemovedOption:
    """A removed setting: the value that meant "off" and why it went."""

    default: Any
    reason: str
    # the removed option whose values this one only parametrised: held at its default, any value of this is inert
    parameter_of: Optional[str] = None


# Per group: "diffgen" is DiffGen's architecture (`model.model` of a DiffGen run, the saved `model` of a DiffGen);
# "training" the settings both LightningModules share (`model`, a checkpoint's top-level hyper-parameters);
# "datamodule" the audio data module's settings (`datamodule`).
NO_LOUDNESS_GAIN = "per-crop loudness normalisation gave no gain"
NO_SIGMA_GAIN = "logit-normal training noise levels gave no gain"
REMOVED_OPTIONS: dict[str, dict[str, RemovedOption]] = {
    "diffgen": {
        "rotary_positions": RemovedOption(False, "it left syllable timing and species accuracy unchanged"),
        "data_scale": RemovedOption(1.0, "DiffGen's latent scale 0.5 started faster and ended lower"),
        "self_condition": RemovedOption(False, "self-conditioning gave no gain in the generated clips"),
    },
    "training": {
        "sigma_distribution": RemovedOption("uniform", NO_SIGMA_GAIN),
        "sigma_mean": RemovedOption(0.0, NO_SIGMA_GAIN, parameter_of="sigma_distribution"),
        "sigma_std": RemovedOption(1.0, NO_SIGMA_GAIN, parameter_of="sigma_distribution"),
    },
    "datamodule": {
        "loudness_normalize": RemovedOption(False, NO_LOUDNESS_GAIN),
        "target_dbfs": RemovedOption(-20.0, NO_LOUDNESS_GAIN, parameter_of="loudness_normalize"),
        "loudness_max_peak": RemovedOption(1.0, NO_LOUDNESS_GAIN, parameter_of="loudness_normalize"),
    },
}


def removed_option_error(key: str, value: Any, option: RemovedOption, where: str) -> str:
    """The message for `where` + `key` set to `value`, an option that no longer exists."""
    return (f"{where}{key}={value!r}: this option was removed ({option.reason}; docs/options.md, "
            f"\"Removed options\"); delete it")


def drop_removed_options(values: Mapping[str, Any], group: str, where: str = "") -> dict[str, Any]:
    """`values` without the options `group` removed, when they hold their old default (or only parametrise a
    removed option that does); one holding the removed behaviour raises a ValueError naming `where` + key."""
    removed = REMOVED_OPTIONS.get(group, {})
    kept = {k: v for k, v in values.items() if k not in removed}
    for key, option in removed.items():
        if key not in values:
            continue
        parent = option.parameter_of
        if parent is not None and values.get(parent, removed[parent].default) == removed[parent].default:
            continue
        if values[key] != option.default:
            raise ValueError(removed_option_error(key, values[key], option, where))
    return kept


def drop_removed_from_saved(config: Mapping[str, Any], kind: str, source: Any = "saved config",
                            training: bool = False) -> dict[str, Any]:
    """The config saved in `source` (an export's JSON or a checkpoint's hyper-parameters) of a `kind` ('diffae' or
    'diffgen') without removed options (see `drop_removed_options`). With `training` (rebuilding a checkpoint's
    LightningModule) the training settings are checked too; loading weights ignores them, as they changed how the
    weights were trained, not what they compute."""
    out = drop_removed_options(config, "training", f"{source}: ") if training else dict(config)
    if isinstance(out.get("model"), Mapping):
        out["model"] = drop_removed_options(out["model"], kind, f"{source}: {kind} model.")
    return out
