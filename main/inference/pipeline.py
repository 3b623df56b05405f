"""The CombinedSampler: text -> DiffGen latent -> DiffAE decoding -> waveform, and its self-describing folders."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from audio_diffusion_pytorch import DiffusionAE, DiffusionModel
from torch import Tensor, nn

from main.diffusion import add_noise
from main.files import PathLike
from main.hub import load_local_first
from main.inference.decoding import decode_latent
from main.inference.device import resolve_device
from main.inference.generate import clip_generators, generate_audio
from main.inference.guidance import generate_latent, text_padding_mode
from main.nets import defaults
from main.nets.lengths import diffae_audio_multiple, diffgen_length_multiple
from main.nets.weights import get_default_diffae, get_default_diffgen, load_model, model_state_dict
from main.text import FrozenTextEncoder


class CombinedSampler(nn.Module):
    """Text -> DiffGen latent -> DiffAE decoding -> waveform, from the extracted (EMA) models."""

    def __init__(
        self,
        diffae: DiffusionAE,
        diffgen: DiffusionModel,
        text_encoder_name: Union[str, FrozenTextEncoder] = "t5-base",
        text_encoder_max_length: int = 128,
        device: Union[str, torch.device] = "cpu",
        sample_rate: int = 32000,
    ):
        super().__init__()
        self.sample_rate = sample_rate
        self.diffae = diffae.eval().requires_grad_(False)
        self.diffgen = diffgen.eval().requires_grad_(False)
        padding = text_padding_mode(diffgen)
        if isinstance(text_encoder_name, FrozenTextEncoder):
            self.text_encoder = text_encoder_name
            if self.text_encoder.text_padding != padding:
                raise ValueError(f"the text encoder's text_padding={self.text_encoder.text_padding!r} differs from "
                                 f"the DiffGen's {padding!r}")
        else:
            self.text_encoder = FrozenTextEncoder(text_encoder_name, text_encoder_max_length, padding)
        self.device = torch.device(device)
        self.to(self.device)

    @torch.no_grad()
    def sample(
        self,
        texts: Union[str, Sequence[str]],
        sampling_steps: int = 100,
        decoding_steps: int = 100,
        embedding_scale: float = 5.0,
        latent_length: int = 2048,
        sampler: str = "ddim",
        decoding_sampler: Optional[str] = None,
        seed: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        show_progress: bool = False,
        batch_size: int = 1,
    ) -> Tensor:
        """Generate audio [batch, channels, samples] for `texts`: clip i is seeded `seed + i`, so it equals
        `sample([texts[i]], seed=seed + i)` (a `generator` instead is shared by the clips, drawn in turn).
        `batch_size` > 1 runs clips through the models together: faster on a GPU, equal only to float rounding."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        generators: Sequence[Optional[torch.Generator]]
        if generator is not None:
            generators = [generator] * len(texts)
        elif seed is not None:
            generators = clip_generators(range(seed, seed + len(texts)), self.device)
        else:
            generators = [None] * len(texts)
        audio, _ = generate_audio(self, texts, generators, sampling_steps, decoding_steps, embedding_scale,
                                  latent_length, sampler, decoding_sampler, show_progress, batch_size)
        return audio

    @torch.no_grad()
    def variation(
        self,
        audio: Tensor,
        texts: Union[str, Sequence[str]],
        strength: float = 0.5,
        sampling_steps: int = 50,
        decoding_steps: int = 50,
        embedding_scale: float = 5.0,
        sampler: str = "ddim",
        seed: Optional[int] = None,
        show_progress: bool = False,
    ) -> Tensor:
        """Audio-to-audio: encode `audio` [batch, channels, samples], noise its latent to `strength` (0 = keep,
        1 = ignore the input) and denoise it towards `texts`; returns audio of the input's length."""
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        if len(texts) == 1 and audio.shape[0] > 1:
            texts = texts * audio.shape[0]
        if len(texts) != audio.shape[0]:
            raise ValueError(f"{len(texts)} texts for {audio.shape[0]} input clips")
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        frames = self.latent_frames(audio.shape[-1] / self.sample_rate)
        padded = torch.nn.functional.pad(audio, (0, frames * self.diffae.latent_factor - audio.shape[-1]))
        latent = self.diffae.encode(padded.to(self.device))
        embedding, mask = self.text_encoder(texts)
        start = add_noise(latent, strength, generator)
        steps = max(1, round(sampling_steps * strength))
        new_latent = generate_latent(self.diffgen, embedding, mask, start, steps, embedding_scale, sampler,
                                     show_progress, sigma_start=strength)
        out = decode_latent(self.diffae, new_latent, decoding_steps, sampler, generator, show_progress)
        return out[..., : audio.shape[-1]]

    def latent_frames(self, seconds: float) -> int:
        """The shortest latent length covering `seconds` of audio that both U-Nets can take."""
        diffgen_config = getattr(self.diffgen, "config", {})
        factor = int(self.diffae.latent_factor)
        diffae_multiple = diffae_audio_multiple(getattr(self.diffae, "config", {}))
        multiple = math.lcm(diffgen_length_multiple(diffgen_config), diffae_multiple // factor)
        return max(multiple, math.ceil(seconds * self.sample_rate / factor / multiple) * multiple)

    def save_pretrained(self, folder: PathLike, include_text_encoder: Optional[bool] = None) -> Path:
        """Write a self-describing folder (safetensors + JSON) that `from_pretrained` and the hub can load.

        The text encoder is stored by name; its weights are copied in when it was loaded from a local folder
        (a path would not work elsewhere) or when `include_text_encoder` is True.
        """
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = self.text_encoder.name_or_path
        include = Path(name).is_dir() if include_text_encoder is None else include_text_encoder
        if include:
            self.text_encoder.tokenizer.save_pretrained(folder / "text_encoder")
            self.text_encoder.model.save_pretrained(folder / "text_encoder")
            name = "text_encoder"
        common = {"sample_rate": self.sample_rate}
        parts = {
            "diffae": (self.diffae, {"kind": "diffae", **common}),
            "diffgen": (self.diffgen, {"kind": "diffgen", **common, "text_encoder": name,
                                       "text_encoder_max_length": self.text_encoder.max_length}),
        }
        for part, (model, config) in parts.items():
            config["model"] = {k: v for k, v in getattr(model, "config", {}).items()}
            save_file(model_state_dict(model), str(folder / f"{part}.safetensors"), metadata={"config": json.dumps(config)})
            (folder / f"{part}.json").write_text(json.dumps(config, indent=2) + "\n")
        (folder / "README.md").write_text(
            "---\nlibrary_name: bird-diffusion\ntags: [text-to-audio, bioacoustics, diffusion]\n---\n"
            "# Bird-sound text-to-audio diffusion\n\n```python\nfrom main.models import CombinedSampler\n"
            f"model = CombinedSampler.from_pretrained(\"{folder.name}\")\n"
            "audio = model.sample([\"Turdus merula; morning; song\"], sampler=\"dpmpp-2m\", sampling_steps=25, "
            "decoding_steps=25)\n```\n"
        )
        return folder

    @classmethod
    def from_pretrained(
        cls, name_or_folder: PathLike, revision: Optional[str] = None,
        device: Optional[Union[str, torch.device]] = None,
    ) -> "CombinedSampler":
        """Load a folder written by `save_pretrained`, or a hub repository holding one (cache first)."""
        folder = Path(name_or_folder)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(load_local_first(
                str(name_or_folder),
                lambda local: snapshot_download(str(name_or_folder), revision=revision, local_files_only=local),
                revision,
            ))
        config = json.loads((folder / "diffgen.json").read_text())
        text_encoder = config.get("text_encoder", "t5-base")
        if (folder / text_encoder).is_dir():
            text_encoder = str(folder / text_encoder)
        return get_default_combined_sampler(folder / "diffae.safetensors", folder / "diffgen.safetensors",
                                            text_encoder, device)

    def push_to_hub(self, repo_id: str, private: bool = True, **kwargs: Any) -> str:
        """Upload `save_pretrained`'s folder to the Hugging Face hub (needs a network and a token)."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, **kwargs)
            return str(api.upload_folder(repo_id=repo_id, folder_path=tmp))

    @property
    def latent_channels(self) -> int:
        """Channels of the DiffAE latent that DiffGen generates."""
        return int(self.diffae.encoder.out_channels)


def get_default_combined_sampler(
    diffae_state_dict_file: Optional[PathLike] = None,
    diffgen_state_dict_file: Optional[PathLike] = None,
    text_encoder_name: Optional[str] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> CombinedSampler:
    """A CombinedSampler from the seed models or exported/checkpointed weights (text encoder read from the export)."""
    diffae = get_default_diffae(diffae_state_dict_file)
    config: dict[str, Any] = {}
    if diffgen_state_dict_file is None:
        diffgen = get_default_diffgen()
    else:
        diffgen, config = load_model(diffgen_state_dict_file, "diffgen")
    name = text_encoder_name or config.get("text_encoder", "t5-base")
    max_length = int(config.get("text_encoder_max_length", defaults.DIFFGEN_CONFIG["embedding_max_length"]))
    device = resolve_device(device)
    sample_rate = int(config.get("sample_rate", 32000))
    return CombinedSampler(diffae, diffgen, name, max_length, device, sample_rate)
