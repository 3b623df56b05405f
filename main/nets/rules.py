"""Rules the networks' settings must follow, each in one function: the builders and LightningModules call them
(so construction from Python fails clearly too) and so do the start-up checks of `main.config`, which turn the
ValueError into a ConfigError naming the config key."""

from __future__ import annotations

from typing import Any, Mapping

ATTEND_NEEDS_TEXT = (
    "model.model.text_padding=attend needs the text encoder's padding embeddings, which pre-encoded data "
    "(datamodule.preencoded) does not store: train from audio and text, or use text_padding=mask"
)


def check_data_scale(config: Mapping[str, Any]) -> None:
    """`data_scale`, the factor a diffusion scales its data by, must be a number > 0."""
    value = config["data_scale"]
    if not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"data_scale must be a number > 0, got {value!r}")


def check_text_length(text_encoder_max_length: int, embedding_max_length: int) -> None:
    """The text encoder's tokens must fit DiffGen's `embedding_max_length`."""
    if int(text_encoder_max_length) > int(embedding_max_length):
        raise ValueError(f"model.text_encoder_max_length={text_encoder_max_length} exceeds "
                         f"model.model.embedding_max_length={embedding_max_length}")


def check_text_source(text_padding: str, preencoded: bool) -> None:
    """`text_padding: attend` needs the text itself: pre-encoded data stores no padding embeddings."""
    if text_padding == "attend" and preencoded:
        raise ValueError(ATTEND_NEEDS_TEXT)
