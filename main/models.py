"""The public facade of the models: `from main.models import CombinedSampler, get_default_diffae, ...`.

Each name lives in one module: architectures, builders and length rules in `main.nets`, weight files in
`main.nets.weights`, the hub's pretrained DiffAE in `main.nets.pretrained`, sampling maths, the one seeded
generation and the CombinedSampler pipeline in `main.inference`. Code inside the repository imports from there.
"""

from __future__ import annotations

from main.inference.decoding import decode_latent, diffae_data_scale, latent_bounds
from main.inference.device import resolve_device
from main.inference.generate import clip_generators, generate_audio
from main.inference.guidance import (
    cfg_unconditional_embedding,
    diffgen_velocity,
    generate_latent,
    guided_velocity_fn,
    text_padding_mode,
    unconditional_inputs,
)
from main.inference.pipeline import CombinedSampler, get_default_combined_sampler
from main.nets.builders import BUILDERS, build_diffae, build_diffgen
from main.nets.defaults import DIFFAE_CONFIG, DIFFGEN_CONFIG, merged_config
from main.nets.fourier import fourier_frame, init_lt_fourier_
from main.nets.lengths import (
    diffae_audio_multiple,
    diffae_downsample_factor,
    diffgen_length_multiple,
    unet_length_multiple,
)
from main.nets.pretrained import (
    PRETRAINED_DIFFAE_REPO,
    PRETRAINED_DIFFAE_REVISION,
    get_pretrained_diffae_from_huggingface,
)
from main.nets.weights import (
    export_config,
    get_default_diffae,
    get_default_diffgen,
    load_model,
    load_model_file,
    load_model_state,
    model_state_dict,
)

__all__ = [
    "BUILDERS", "DIFFAE_CONFIG", "DIFFGEN_CONFIG", "PRETRAINED_DIFFAE_REPO", "PRETRAINED_DIFFAE_REVISION",
    "CombinedSampler", "build_diffae", "build_diffgen", "cfg_unconditional_embedding", "clip_generators",
    "decode_latent", "diffae_audio_multiple", "diffae_data_scale", "diffae_downsample_factor",
    "diffgen_velocity", "export_config", "fourier_frame", "generate_audio", "generate_latent",
    "get_default_combined_sampler", "get_default_diffae", "get_default_diffgen",
    "get_pretrained_diffae_from_huggingface", "guided_velocity_fn", "init_lt_fourier_", "latent_bounds", "load_model",
    "load_model_file", "load_model_state", "merged_config", "model_state_dict",
    "resolve_device", "text_padding_mode", "unconditional_inputs", "unet_length_multiple", "diffgen_length_multiple",
]
