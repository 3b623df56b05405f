"""Frozen text encoder (t5-base by default) that turns label strings into token embeddings and a padding mask."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from main.hub import load_local_first, package_dir

T5_MODEL_TYPES = ("t5", "mt5", "umt5")
# How a DiffGen sees the padding tokens of its text: "mask" (this repository: padding zeroed and excluded from
# cross-attention) or "attend" (the original bird-diffusion code and a-unet: padding embeddings attended to).
TEXT_PADDING_MODES = ("mask", "attend")
# A text encoder inside an installed Python package, as an export records it: `${package_dir:<package>,<sub-path>}`
# (the config resolver's syntax), so that an exported model names its encoder on any machine.
_PACKAGE_REFERENCE = re.compile(r"^\$\{package_dir:([^}]+)\}$")
_PACKAGE_FOLDERS = ("site-packages", "dist-packages")


def portable_text_encoder(name_or_path: str) -> str:
    """`${package_dir:<package>,<sub-path>}` for a folder inside an installed package; other names unchanged."""
    parts = Path(name_or_path).parts
    for i, part in enumerate(parts[:-1]):
        if part in _PACKAGE_FOLDERS and parts[i + 1].isidentifier():
            return "${package_dir:" + ",".join(parts[i + 1:]) + "}"
    return name_or_path


def resolve_text_encoder(name_or_path: str) -> str:
    """The folder a `${package_dir:...}` reference names on this machine; hub names and paths unchanged."""
    match = _PACKAGE_REFERENCE.match(name_or_path)
    if match is None:
        return name_or_path
    return package_dir(*match.group(1).split(","))


def check_text_padding(mode: str) -> str:
    """`mode` if it is a known text-padding mode, else a ValueError naming the choices."""
    if mode not in TEXT_PADDING_MODES:
        raise ValueError(f"text_padding must be one of {TEXT_PADDING_MODES}, got {mode!r}")
    return mode


class FrozenTextEncoder(nn.Module):
    """Tokenizer + encoder of a Hugging Face model, frozen and always in eval mode."""

    def __init__(self, name_or_path: str = "t5-base", max_length: int = 128, text_padding: str = "mask"):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer, T5EncoderModel

        self.name_or_path = resolve_text_encoder(str(name_or_path))
        self.max_length = max_length
        self.text_padding = check_text_padding(text_padding)

        def load(local_files_only: bool) -> tuple:
            config = AutoConfig.from_pretrained(self.name_or_path, local_files_only=local_files_only)
            tokenizer = AutoTokenizer.from_pretrained(self.name_or_path, local_files_only=local_files_only)
            model_cls = T5EncoderModel if config.model_type in T5_MODEL_TYPES else AutoModel
            return tokenizer, model_cls.from_pretrained(self.name_or_path, local_files_only=local_files_only)

        self.tokenizer, self.model = load_local_first(self.name_or_path, load)
        self.model.requires_grad_(False)
        self.eval()
        config = self.model.config
        self.features: int = int(getattr(config, "hidden_size", None) or config.d_model)

    def train(self, mode: bool = True) -> "FrozenTextEncoder":
        """Stay in eval mode whatever the caller asks: the encoder is frozen (no dropout)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Embed `texts` as [batch, max_length, features] plus a bool mask [batch, max_length] (True = attend).

        In "mask" mode padded positions are zeroed and masked; in "attend" mode (weights from the original
        repository) the encoder's padding embeddings are kept and the mask is all true, as they were trained.
        """
        if isinstance(texts, str):
            texts = [texts]
        tokens = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        input_ids = tokens["input_ids"].to(device)
        attention_mask = tokens["attention_mask"].to(device)
        embedding = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.bool()
        if self.text_padding == "attend":
            return embedding, torch.ones_like(mask)
        # Padded positions are zeroed as well as masked, so cached embeddings carry no padding information.
        return embedding * mask.unsqueeze(-1), mask
