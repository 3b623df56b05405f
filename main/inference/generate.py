"""The one text -> audio generation: each clip seeded on its own and run through the models on its own."""

from __future__ import annotations

from typing import Any, Optional, Protocol, Sequence, Union

import torch
from torch import Tensor

from main.diffusion import row_noise
from main.inference.decoding import decode_latent
from main.inference.guidance import generate_latent



class TextToAudioModels(Protocol):
    """What generation needs of a pipeline (CombinedSampler): the three models, the latent width and device."""

    text_encoder: Any
    diffgen: Any
    diffae: Any
    latent_channels: int
    device: torch.device


def clip_generators(seeds: Sequence[int], device: Union[str, torch.device]) -> list[torch.Generator]:
    """One generator per clip, the i-th seeded `seeds[i]`."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


@torch.no_grad()
def generate_audio(
    model: TextToAudioModels,
    texts: Sequence[str],
    generators: Sequence[Optional[torch.Generator]],
    sampling_steps: int,
    decoding_steps: int,
    embedding_scale: float,
    latent_length: int,
    sampler: str = "ddim",
    decoding_sampler: Optional[str] = None,
    show_progress: bool = False,
    batch_size: int = 1,
) -> tuple[Tensor, Tensor]:
    """Audio [clips, channels, samples] and DiffGen latents [clips, channels, frames] for `texts`.

    Clip i draws its latent noise, then its decoding noise, from `generators[i]` (None: torch's global RNG).
    `decoding_sampler` defaults to `sampler`.
    Clips run through the models one at a time because batched kernels round differently at other batch
    sizes: a clip's audio is bit-identical whatever it is generated with. `batch_size` > 1 runs that many clips
    through the models together (much faster on a GPU) from the same per-clip noise; the audio then matches the
    one-at-a-time audio only to float rounding.
    """
    if not texts or len(texts) != len(generators):
        raise ValueError(f"{len(texts)} texts and {len(generators)} generators: need as many, at least one")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    audio, latents = [], []
    for start in range(0, len(texts), batch_size):
        chunk, chunk_generators = texts[start:start + batch_size], generators[start:start + batch_size]
        embedding, mask = model.text_encoder(list(chunk))
        noise = row_noise(chunk_generators, (model.latent_channels, latent_length), model.device)
        latent = generate_latent(model.diffgen, embedding, mask, noise, sampling_steps, embedding_scale, sampler,
                                 show_progress)
        audio.append(decode_latent(model.diffae, latent, decoding_steps, decoding_sampler or sampler,
                                   show_progress=show_progress, generators=chunk_generators))
        latents.append(latent)
    return torch.cat(audio), torch.cat(latents)
