"""The DiffAE pretrained on music, from the Hugging Face hub (archinetai's dmae1d) loaded into the seed architecture."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from audio_diffusion_pytorch import DiffusionAE

from main.hub import hub_weights
from main.nets.builders import build_diffae
from main.nets.weights import get_default_diffae, load_model_state

PRETRAINED_DIFFAE_REPO = "archinetai/dmae1d-ATC64-v2"
PRETRAINED_DIFFAE_REVISION = "3ffeea68d4c069777055fce9ac77bbb67eec1d68"


def get_pretrained_diffae_from_huggingface(
    repo: str = PRETRAINED_DIFFAE_REPO, revision: Optional[str] = PRETRAINED_DIFFAE_REVISION
) -> DiffusionAE:
    """The DiffAE pretrained on music (48 kHz stereo) from the Hugging Face hub at a pinned revision, or from a
    local folder in the same layout. Its weights (the hub model's `.model.*`) are loaded into the seed
    architecture without running the repository's code; every weight must fit."""
    model = build_diffae()
    load_model_state(model, hub_weights(repo, revision, prefix="model."))
    return model


def load_diffae(source: str) -> DiffusionAE:
    """A DiffAE from an exported/checkpoint file, the pretrained hub model when `source` is 'pretrained', or a
    model in the hub's layout (config.json + remote code + weights) in a local folder."""
    if source == "pretrained":
        return get_pretrained_diffae_from_huggingface()
    if Path(source).is_dir():
        return get_pretrained_diffae_from_huggingface(source, revision=None)
    return get_default_diffae(source)
