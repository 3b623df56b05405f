"""The one text -> audio generation: each clip seeded on its own and run through the models on its own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch
from torch import Tensor

from main.inference.decoding import decode_latent
from main.inference.guidance import generate_latent

if TYPE_CHECKING:
    from main.inference.pipeline import CombinedSampler


def clip_generators(seeds: Sequence[int], device: Union[str, torch.device]) -> list[torch.Generator]:
    """One generator per clip, the i-th seeded `seeds[i]`."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


@torch.no_grad()
def generate_audio(
    model: "CombinedSampler",
    texts: Sequence[str],
    generators: Sequence[Optional[torch.Generator]],
    sampling_steps: int,
    decoding_steps: int,
    embedding_scale: float,
    latent_length: int,
    sampler: str = "ddim",
    decoding_sampler: Optional[str] = None,
    show_progress: bool = False,
) -> tuple[Tensor, Tensor]:
    """Audio [clips, channels, samples] and DiffGen latents [clips, channels, frames] for `texts`.

    Clip i draws its latent noise, then its decoding noise, from `generators[i]` (None: torch's global RNG).
    Clips run through the models one at a time because batched kernels round differently at other batch
    sizes: a clip's audio is bit-identical whatever it is generated with.
    """
    if not texts or len(texts) != len(generators):
        raise ValueError(f"{len(texts)} texts and {len(generators)} generators: need as many, at least one")
    audio, latents = [], []
    for text, generator in zip(texts, generators):
        embedding, mask = model.text_encoder([text])
        noise = torch.randn((1, model.latent_channels, latent_length), device=model.device, generator=generator)
        latent = generate_latent(model.diffgen, embedding, mask, noise, sampling_steps, embedding_scale, sampler,
                                 show_progress)
        audio.append(decode_latent(model.diffae, latent, decoding_steps, decoding_sampler or sampler, generator,
                                   show_progress))
        latents.append(latent)
    return torch.cat(audio), torch.cat(latents)
