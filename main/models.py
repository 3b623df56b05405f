"""The seed's models: DiffAE (audio <-> latent), DiffGen (text -> latent) and the CombinedSampler (text -> audio)."""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from audio_diffusion_pytorch import DiffusionAE, DiffusionModel, LTPlugin, UNetV0, VDiffusion, VSampler
from audio_encoders_pytorch import ME1d, TanhBottleneck
from torch import Tensor, nn

from main.attention import embedding_mask, enable_masked_attention
from main.compat import checkpoint_layout, layout_kind, model_weights, original_config, read_checkpoint
from main.diffusion import add_noise
from main.diffusion import sample as run_sampler
from main.hub import hub_weights, load_local_first
from main.text import FrozenTextEncoder, check_text_padding

PRETRAINED_DIFFAE_REPO = "archinetai/dmae1d-ATC64-v2"
PRETRAINED_DIFFAE_REVISION = "3ffeea68d4c069777055fce9ac77bbb67eec1d68"

# The seed's architectures, read from the config groups the experiments compose (one source of truth).
from main.conf import load_arch_yaml  # noqa: E402

DIFFAE_CONFIG: dict[str, Any] = load_arch_yaml("diffae_arch", "seed")  # main/conf/diffae_arch/seed.yaml
DIFFGEN_CONFIG: dict[str, Any] = load_arch_yaml("diffgen_arch", "seed")  # main/conf/diffgen_arch/seed.yaml


def resolve_device(device: Optional[Union[str, torch.device]] = None) -> str:
    """'auto'/None -> 'cuda' when a GPU is available, else 'cpu'; anything else is used as given."""
    if device is None or str(device) == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(device)


def _merged(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"unknown model config keys {sorted(unknown)}; valid keys: {sorted(defaults)}")
    return {**copy.deepcopy(dict(defaults)), **dict(overrides)}


def build_diffae(**overrides: Any) -> DiffusionAE:
    """A DiffAE with the seed's architecture, any hyper-parameter of `DIFFAE_CONFIG` overridden."""
    c = _merged(DIFFAE_CONFIG, overrides)
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
    if not c["data_scale"] > 0:
        raise ValueError(f"model.data_scale must be > 0, got {c['data_scale']!r}")
    if c["lt_init"] == "fourier":
        init_lt_fourier_(model, c["lt_num_filters"], c["lt_window_length"], c["lt_stride"])
    elif c["lt_init"] != "random":
        raise ValueError(f"model.lt_init must be 'random' or 'fourier', got {c['lt_init']!r}")
    model.config = c
    return model


def fourier_frame(window_length: int) -> Tensor:
    """[window_length, window_length] filters: an orthonormal real DFT basis times a sine window, a tight frame
    (perfect reconstruction by overlap-add of the same filters) at hop window_length / 2."""
    n = torch.arange(window_length, dtype=torch.float64)
    rows = [torch.full_like(n, window_length ** -0.5)]
    for k in range(1, window_length // 2):
        angle = 2 * math.pi * k * n / window_length
        rows += [math.sqrt(2 / window_length) * torch.cos(angle), math.sqrt(2 / window_length) * torch.sin(angle)]
    rows.append(torch.cos(math.pi * n) * window_length ** -0.5)
    window = torch.sin(math.pi * (n + 0.5) / window_length)
    return (torch.stack(rows) * window).float()


@torch.no_grad()
def init_lt_fourier_(diffae: DiffusionAE, num_filters: int, window_length: int, stride: int) -> None:
    """Start the LT plugin's learned transform (its analysis conv and synthesis transposed conv) as a windowed
    DFT of each audio channel. From random filters a tone above a few kHz looks like fast, aliased change between
    frames and the U-Net learns it last; in a DFT frame every frequency is a slowly varying channel."""
    if num_filters != window_length or stride * 2 != window_length or window_length % 2:
        raise ValueError("model.lt_init=fourier needs lt_num_filters == lt_window_length == 2 * lt_stride (got "
                         f"{num_filters}, {window_length}, {stride})")
    analysis, synthesis = diffae.net.blocks[0], diffae.net.blocks[1]
    frame = fourier_frame(window_length)
    for weight in (analysis.weight, synthesis.weight):  # [channels * filters, channels, window] for both
        weight.zero_()
        for channel in range(weight.shape[1]):
            weight[channel * num_filters:(channel + 1) * num_filters, channel] = frame


def build_diffgen(**overrides: Any) -> DiffusionModel:
    """A DiffGen with the seed's architecture (overridable), CFG embedding and masked SDPA cross-attention."""
    c = _merged(DIFFGEN_CONFIG, overrides)
    check_text_padding(c["text_padding"])
    model = DiffusionModel(
        net_t=UNetV0,
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
    enable_masked_attention(model, num_heads=c["attention_heads"])
    model.config = c
    return model


def diffae_downsample_factor(config: Mapping[str, Any]) -> int:
    """Audio samples per latent frame of a DiffAE config (1024 for the seed)."""
    c = _merged(DIFFAE_CONFIG, config)
    factor = c["stft_hop_length"]
    for f in c["encoder_factors"]:
        factor *= f
    return factor


def unet_length_multiple(factors: Sequence[int], stride: int = 1) -> int:
    """The length a U-Net input must be divisible by: the product of its down-sampling factors (and LT stride)."""
    multiple = stride
    for f in factors:
        multiple *= f
    return multiple


def diffae_audio_multiple(config: Mapping[str, Any]) -> int:
    """The one length rule: audio a DiffAE of `config` encodes and decodes is a multiple of this (its U-Net's
    down-sampling incl. the LT stride, and its encoder's samples per latent frame)."""
    c = _merged(DIFFAE_CONFIG, config)
    return math.lcm(unet_length_multiple(c["factors"], c["lt_stride"]), diffae_downsample_factor(c))


# ---------------------------------------------------------------------------------------------- loading

def _tied_groups(model: nn.Module) -> list[list[str]]:
    """State-dict names that share storage (DiffusionModel registers its U-Net as `net`, `diffusion.net` and
    `sampler.net`; a-unet repeats some layers), each group sorted with the preferred name first."""
    groups: dict[tuple, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
        groups.setdefault(key, []).append(name)
    return [sorted(names, key=lambda n: (n.startswith(("diffusion.", "sampler.")), n)) for names in groups.values()]


def model_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The model's state dict with each shared tensor stored once (what exported files hold)."""
    state = model.state_dict()
    return {names[0]: state[names[0]].detach().contiguous() for names in _tied_groups(model)}


def load_model_state(model: nn.Module, state: Mapping[str, Tensor]) -> None:
    """Load a full or deduplicated state dict; a key missing for any other reason is an error."""
    result = model.load_state_dict(dict(state), strict=False)
    present = set(state)
    tied_ok = {n for names in _tied_groups(model) if present.intersection(names) for n in names}
    missing = [k for k in result.missing_keys if k not in tied_ok]
    if missing or result.unexpected_keys:
        raise RuntimeError(
            f"weights do not fit the model: missing {missing[:5]}, unexpected {result.unexpected_keys[:5]} "
            "(was the file saved from a model with other hyper-parameters?)"
        )


def load_model_file(path: Union[str, Path], kind: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read an exported `.safetensors` (+ JSON config), a Lightning `.ckpt` (its EMA weights) or a checkpoint or
    state dict of the original bird-diffusion code (mapped by `main.compat`), never unpickling.

    Returns the model's state dict and its saved configuration (`{}` when the file carries none).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{kind} weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        state = load_file(str(path))
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            config = json.loads(sidecar.read_text())
        else:
            with safe_open(str(path), framework="pt") as f:
                config = json.loads((f.metadata() or {}).get("config", "{}"))
        if config.get("kind", kind) != kind:
            raise ValueError(f"{path} holds a {config['kind']} model, not a {kind}")
        return state, config
    checkpoint = read_checkpoint(path)
    layout = checkpoint_layout(checkpoint)
    if layout != "ours":  # the original bird-diffusion code's checkpoint or state dict
        found = layout_kind(layout)
        if found not in (None, kind):
            raise ValueError(f"{path} is the original's {found} checkpoint, not a {kind}")
        state, prefix = model_weights(checkpoint.get("state_dict", checkpoint))
        config = original_config(kind)
        logging.getLogger(__name__).warning(
            "%s: %s layout, %d tensors from %s; loaded as the original's %s (%s)", path, layout, len(state),
            prefix + "*" if prefix else "the whole file", kind, config["model"] or "seed architecture")
        return state, config
    prefix = "ema.ema_model."
    state = {k[len(prefix):]: v for k, v in checkpoint["state_dict"].items() if k.startswith(prefix)}
    if not state:
        raise ValueError(f"{path} has no EMA weights (keys starting with {prefix!r})")
    hparams = checkpoint.get("hyper_parameters", {})
    if hparams.get("kind", kind) != kind:
        raise ValueError(f"{path} is a {hparams['kind']} checkpoint, not a {kind}")
    return state, export_config(hparams)


def export_config(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-serialisable description of a model stored beside exported weights."""
    keys = ("kind", "model", "sample_rate", "text_encoder", "text_encoder_max_length")
    return {k: hparams[k] for k in keys if k in hparams}


BUILDERS = {"diffae": build_diffae, "diffgen": build_diffgen}


def load_model(path: Union[str, Path], kind: str) -> tuple[nn.Module, dict[str, Any]]:
    """Build a `kind` ('diffae' or 'diffgen') model with the hyper-parameters saved in `path` and load its
    weights (the EMA weights of a checkpoint); returns the model and its saved config."""
    state, config = load_model_file(path, kind)
    model = BUILDERS[kind](**config.get("model", {}))
    load_model_state(model, state)
    return model, config


def get_default_diffae(state_dict_file: Optional[Union[str, Path]] = None) -> DiffusionAE:
    """The seed DiffAE (185.1M params), or the model saved in `state_dict_file` with its own hyper-parameters."""
    return build_diffae() if state_dict_file is None else load_model(state_dict_file, "diffae")[0]


def get_default_diffgen(state_dict_file: Optional[Union[str, Path]] = None) -> DiffusionModel:
    """The seed DiffGen (562.6M params), or the model saved in `state_dict_file` with its own hyper-parameters."""
    return build_diffgen() if state_dict_file is None else load_model(state_dict_file, "diffgen")[0]


def get_pretrained_diffae_from_huggingface(
    repo: str = PRETRAINED_DIFFAE_REPO, revision: Optional[str] = PRETRAINED_DIFFAE_REVISION
) -> DiffusionAE:
    """The DiffAE pretrained on music (48 kHz stereo) from the Hugging Face hub at a pinned revision, or from a
    local folder in the same layout. Its weights (the hub model's `.model.*`) are loaded into the seed
    architecture without running the repository's code; every weight must fit."""
    model = build_diffae()
    load_model_state(model, hub_weights(repo, revision, prefix="model."))
    return model


# ---------------------------------------------------------------------------------------------- sampling


def cfg_unconditional_embedding(diffgen: DiffusionModel) -> nn.Embedding:
    """The learned embedding that replaces the text for classifier-free guidance (a-unet's FixedEmbedding)."""
    embeddings = [m for m in diffgen.modules() if isinstance(m, nn.Embedding)]
    if len(embeddings) != 1:
        raise TypeError(f"expected one CFG embedding in DiffGen, found {len(embeddings)}")
    return embeddings[0]


def diffgen_velocity(
    diffgen: DiffusionModel, x: Tensor, sigmas: Tensor, embedding: Tensor, mask: Optional[Tensor]
) -> Tensor:
    """DiffGen's velocity prediction; the text padding is masked out of cross-attention unless the model was
    trained attending to it (`text_padding: attend`)."""
    if text_padding_mode(diffgen) == "attend":
        mask = None
    with embedding_mask(diffgen, mask):
        return diffgen.net(x, sigmas, embedding=embedding)


def text_padding_mode(diffgen: nn.Module) -> str:
    """How `diffgen` treats text padding ("mask" unless its config says otherwise)."""
    return str(getattr(diffgen, "config", {}).get("text_padding", "mask"))


def unconditional_inputs(diffgen: DiffusionModel, batch_size: int, length: int) -> tuple[Tensor, Tensor]:
    """The CFG 'no text' embedding [batch, length, features] and its all-true mask."""
    table = cfg_unconditional_embedding(diffgen).weight
    embedding = table[:length].unsqueeze(0).expand(batch_size, -1, -1)
    return embedding, torch.ones(batch_size, length, dtype=torch.bool, device=table.device)


def guided_velocity_fn(diffgen: DiffusionModel, embedding: Tensor, mask: Tensor, scale: float):
    """Velocity with classifier-free guidance; conditional and unconditional run as one batched forward."""
    if scale == 1.0:
        return lambda x, sigmas: diffgen_velocity(diffgen, x, sigmas, embedding, mask)
    uncond_embedding, uncond_mask = unconditional_inputs(diffgen, embedding.shape[0], embedding.shape[1])
    both_embedding = torch.cat([embedding, uncond_embedding.to(embedding.dtype)])
    both_mask = torch.cat([mask, uncond_mask])

    def velocity(x: Tensor, sigmas: Tensor) -> Tensor:
        v = diffgen_velocity(diffgen, torch.cat([x, x]), torch.cat([sigmas, sigmas]), both_embedding, both_mask)
        v_cond, v_uncond = v.chunk(2)
        return v_uncond + (v_cond - v_uncond) * scale

    return velocity


def generate_latent(
    diffgen: DiffusionModel,
    embedding: Tensor,
    mask: Tensor,
    noise: Tensor,
    num_steps: int,
    embedding_scale: float,
    sampler: str = "ddim",
    show_progress: bool = False,
) -> Tensor:
    """Denoise `noise` [batch, channels, frames] into DiffGen latents for the text embeddings (CFG batched)."""
    velocity = guided_velocity_fn(diffgen, embedding, mask, embedding_scale)
    return run_sampler(velocity, noise, num_steps, sampler, show_progress)


def decode_latent(
    diffae: DiffusionAE,
    latent: Tensor,
    num_steps: int,
    sampler: str = "ddim",
    generator: Optional[torch.Generator] = None,
    show_progress: bool = False,
    noise: Optional[Tensor] = None,
) -> Tensor:
    """Decode latents [batch, channels, frames] into audio by diffusion conditioned on the latent.

    The audio has `frames * latent_factor` samples (the library's `decode` rounds that to the closest power of
    two, which only fits the U-Net when it is one already; both agree on power-of-two latent lengths).
    """
    if noise is None:  # else the caller drew it (e.g. one generator per clip)
        length = latent.shape[2] * diffae.latent_factor
        noise = torch.randn((latent.shape[0], diffae.in_channels, length), device=latent.device,
                            dtype=latent.dtype, generator=generator)
    channels = [None] * diffae.inject_depth + [latent]
    audio = run_sampler(lambda x, s: diffae.net(x, s, channels=channels), noise, num_steps, sampler, show_progress)
    return audio / diffae_data_scale(diffae)


def diffae_data_scale(diffae: nn.Module) -> float:
    """The factor between audio and what the DiffAE decoder diffuses (1.0 for models without one)."""
    return float(getattr(diffae, "config", {}).get("data_scale", 1.0))


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
    ) -> Tensor:
        """Generate audio [batch, channels, samples] for `texts`; the same `seed` gives the same audio."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if generator is None and seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        embedding, mask = self.text_encoder(texts)
        noise = torch.randn(
            (len(texts), self.latent_channels, latent_length), device=self.device, generator=generator
        )
        latent = generate_latent(self.diffgen, embedding, mask, noise, sampling_steps, embedding_scale, sampler,
                                 show_progress)
        return decode_latent(
            self.diffae, latent, decoding_steps, decoding_sampler or sampler, generator, show_progress
        )

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
        velocity = guided_velocity_fn(self.diffgen, embedding, mask, embedding_scale)
        steps = max(1, round(sampling_steps * strength))
        new_latent = run_sampler(velocity, start, steps, sampler, show_progress, sigma_start=strength)
        out = decode_latent(self.diffae, new_latent, decoding_steps, sampler, generator, show_progress)
        return out[..., : audio.shape[-1]]

    def latent_frames(self, seconds: float) -> int:
        """The shortest latent length covering `seconds` of audio that both U-Nets can take."""
        diffgen_config = getattr(self.diffgen, "config", DIFFGEN_CONFIG)
        factor = int(self.diffae.latent_factor)
        diffae_multiple = diffae_audio_multiple(getattr(self.diffae, "config", {}))
        multiple = math.lcm(unet_length_multiple(diffgen_config["factors"]), diffae_multiple // factor)
        return max(multiple, math.ceil(seconds * self.sample_rate / factor / multiple) * multiple)

    def save_pretrained(self, folder: Union[str, Path], include_text_encoder: Optional[bool] = None) -> Path:
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
        cls, name_or_folder: Union[str, Path], revision: Optional[str] = None,
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
    diffae_state_dict_file: Optional[Union[str, Path]] = None,
    diffgen_state_dict_file: Optional[Union[str, Path]] = None,
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
    max_length = int(config.get("text_encoder_max_length", DIFFGEN_CONFIG["embedding_max_length"]))
    device = resolve_device(device)
    sample_rate = int(config.get("sample_rate", 32000))
    return CombinedSampler(diffae, diffgen, name, max_length, device, sample_rate)
