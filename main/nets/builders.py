"""Builders of the seed's DiffAE (audio <-> latent) and DiffGen (text -> latent), any hyper-parameter overridable."""

from __future__ import annotations

from functools import partial
from typing import Any

from audio_diffusion_pytorch import DiffusionAE, DiffusionModel, LTPlugin, UNetV0, VDiffusion, VSampler
from audio_encoders_pytorch import ME1d, TanhBottleneck

from main.attention import enable_masked_attention
from main.nets import defaults
from main.nets.fourier import init_lt_fourier_
from main.nets.patching import FramePatchedNet
from main.nets.rules import check_data_scale
from main.nets.text_modulation import PooledTextModulation
from main.text import check_text_padding

# The defaults are read as `defaults.X` at call time, so that replacing them (tests do) reaches every builder.


def build_diffae(**overrides: Any) -> DiffusionAE:
    """A DiffAE with the seed's architecture, any hyper-parameter of `DIFFAE_CONFIG` overridden."""
    c = defaults.merged_config(defaults.DIFFAE_CONFIG, overrides)
    check_data_scale(c)
    model = DiffusionAE(
        net_t=LTPlugin(UNetV0, num_filters=c["lt_num_filters"], window_length=c["lt_window_length"],
                       stride=c["lt_stride"]),
        dim=1,
        in_channels=c["in_channels"],
        channels=list(c["channels"]),
        factors=list(c["factors"]),
        items=list(c["items"]),
        encoder=ME1d(
            in_channels=c["in_channels"],
            channels=c["encoder_channels"],
            multipliers=list(c["encoder_multipliers"]),
            factors=list(c["encoder_factors"]),
            num_blocks=list(c["encoder_num_blocks"]),
            stft_num_fft=c["stft_num_fft"],
            stft_hop_length=c["stft_hop_length"],
            out_channels=c["latent_channels"],
            bottleneck=TanhBottleneck(),
        ),
        inject_depth=c["inject_depth"],
    )
    if c["lt_init"] == "fourier":
        init_lt_fourier_(model, c["lt_num_filters"], c["lt_window_length"], c["lt_stride"])
    elif c["lt_init"] != "random":
        raise ValueError(f"model.lt_init must be 'random' or 'fourier', got {c['lt_init']!r}")
    model.config = c
    return model


def build_diffgen(**overrides: Any) -> DiffusionModel:
    """A DiffGen with the seed's architecture (overridable), CFG embedding, masked SDPA cross-attention and, with
    `text_modulation`, the pooled text in every block's modulation features."""
    c = defaults.merged_config(defaults.DIFFGEN_CONFIG, overrides)
    check_text_padding(c["text_padding"])
    patch_size = int(c["patch_size"])
    net_t = UNetV0 if patch_size == 1 else partial(FramePatchedNet, UNetV0, patch_size)
    if c["text_modulation"]:
        net_t = partial(PooledTextModulation, net_t)
    model = DiffusionModel(
        net_t=net_t,
        in_channels=c["in_channels"],
        channels=list(c["channels"]),
        factors=list(c["factors"]),
        items=list(c["items"]),
        attentions=list(c["attentions"]),
        cross_attentions=list(c["cross_attentions"]),
        attention_heads=c["attention_heads"],
        attention_features=c["attention_features"],
        diffusion_t=VDiffusion,
        sampler_t=VSampler,
        embedding_max_length=c["embedding_max_length"],
        embedding_features=c["embedding_features"],
        use_text_conditioning=False,
        use_embedding_cfg=True,
    )
    mask_state = enable_masked_attention(model, num_heads=c["attention_heads"])
    if isinstance(model.net, PooledTextModulation):
        model.net.mask_state = mask_state
    model.config = c
    return model


BUILDERS = {"diffae": build_diffae, "diffgen": build_diffgen}
