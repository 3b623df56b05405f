"""`DiffGen`: the LightningModule that trains text-conditional latent diffusion on a frozen DiffAE's latents."""

from __future__ import annotations

from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from main.inference.decoding import decode_latent
from main.inference.guidance import generate_latent
from main.modules.base import EMADiffusionModule
from main.modules.losses import text_conditional_loss
from main.nets.builders import build_diffae, build_diffgen
from main.nets.defaults import DIFFGEN_CONFIG
from main.nets.pretrained import load_diffae
from main.nets.rules import check_text_length, check_text_source
from main.text import FrozenTextEncoder

class DiffGen(EMADiffusionModule):
    """Text-conditional latent diffusion: frozen text encoder + frozen DiffAE encoder feed a DiffGen U-Net."""

    def __init__(
        self,
        model: Optional[Mapping[str, Any]] = None,
        autoencoder: Optional[str] = None,
        autoencoder_model: Optional[Mapping[str, Any]] = None,
        text_encoder: str = "t5-base",
        text_encoder_max_length: int = 128,
        cfg_mask_proba: float = 0.1,
        sample_rate: int = 32000,
        preview_embedding_scale: float = 5.0,
        **training: Any,
    ):
        hparams = {
            "kind": "diffgen", "model": model or {}, "autoencoder": autoencoder,
            "autoencoder_model": autoencoder_model or {}, "text_encoder": text_encoder,
            "text_encoder_max_length": text_encoder_max_length, "cfg_mask_proba": cfg_mask_proba,
            "sample_rate": sample_rate, "preview_embedding_scale": preview_embedding_scale,
        }
        super().__init__(hparams, **training)
        if not 0.0 <= cfg_mask_proba < 1.0:
            raise ValueError(f"model.cfg_mask_proba must be in [0, 1), got {cfg_mask_proba}")
        self.model = self.build_model()
        self._init_ema()
        # Frozen parts live outside the module tree: not in checkpoints, not seen by the optimizer or DDP,
        # and untouched by Lightning's .train().
        text = FrozenTextEncoder(text_encoder, text_encoder_max_length, self.model_config("text_padding"))
        diffae = load_diffae(autoencoder) if autoencoder else build_diffae(**self.hparams.autoencoder_model)
        self._frozen: dict[str, nn.Module] = {"text": text, "autoencoder": diffae.eval().requires_grad_(False)}
        self._check_shapes()

    def build_model(self) -> nn.Module:
        """A DiffGen U-Net of the configured architecture."""
        return build_diffgen(**self.hparams.model)

    def _check_shapes(self) -> None:
        c = self.hparams
        features = self.model_config("embedding_features")
        if self.text_encoder.features != features:
            raise ValueError(
                f"model.model.embedding_features={features} but text encoder {c.text_encoder!r} gives "
                f"{self.text_encoder.features}-d embeddings"
            )
        check_text_length(c.text_encoder_max_length, self.model_config("embedding_max_length"))
        latent_channels = self.autoencoder.encoder.out_channels
        if latent_channels != self.model_config("in_channels"):
            raise ValueError(
                f"model.model.in_channels={self.model_config('in_channels')} but the DiffAE latent has "
                f"{latent_channels} channels"
            )

    def model_config(self, key: str) -> Any:
        """A DiffGen hyper-parameter, falling back to the seed's value."""
        return self.hparams.model.get(key, DIFFGEN_CONFIG[key])

    def _frozen_module(self, name: str) -> nn.Module:
        module = self._frozen[name]
        if next(module.parameters()).device != self.device:
            module.to(self.device)
        return module

    @property
    def text_encoder(self) -> FrozenTextEncoder:
        """The frozen text encoder, on this module's device."""
        return self._frozen_module("text")  # type: ignore[return-value]

    @property
    def autoencoder(self) -> nn.Module:
        """The frozen DiffAE (its encoder makes training latents, its decoder renders previews)."""
        return self._frozen_module("autoencoder")

    def encode_batch(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
        """Latents, text embeddings and text masks of a batch (pre-encoded entries are used when present)."""
        with torch.no_grad():
            latent = batch["latent"] if "latent" in batch else self.autoencoder.encode(batch["audio"])
            if "embedding" in batch:
                check_text_source(self.model_config("text_padding"), preencoded=True)
                embedding, mask = batch["embedding"].float(), batch["embedding_mask"].bool()
            else:
                embedding, mask = self.text_encoder(batch["text"])
        return latent, embedding, mask

    def diffusion_loss(self, model: nn.Module, batch: Mapping[str, Any], training: bool) -> Tensor:
        """V-diffusion loss on latents, text masked for CFG with probability `cfg_mask_proba` in training."""
        latent, embedding, mask = self.encode_batch(batch)
        proba = self.hparams.cfg_mask_proba if training else 0.0
        return text_conditional_loss(model, latent, embedding, mask, proba)

    @torch.no_grad()
    def preview(self, batch: Mapping[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        """EMA generations for the batch's texts, next to the real clips."""
        latent, embedding, mask = self.encode_batch(batch)
        noise = torch.randn(latent.shape, device=latent.device, generator=generator)
        generated_latent = generate_latent(self.ema_model, embedding, mask, noise, self.hparams.preview_steps,
                                           self.hparams.preview_embedding_scale, self.hparams.preview_sampler)
        audio = decode_latent(self.autoencoder, generated_latent, self.hparams.preview_steps,
                              self.hparams.preview_sampler, generator)
        out = {"generated": audio}
        if "audio" in batch:
            out["real"] = batch["audio"]
        return out
