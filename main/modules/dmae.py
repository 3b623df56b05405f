"""`DMAE`: the LightningModule that trains the DiffAE (audio -> latent -> audio) on cropped stereo audio."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import Tensor, nn

from main.diffusion import rollout_loss_and_estimate, v_diffusion_loss, v_diffusion_loss_and_estimate
from main.hub import hub_weights
from main.inference.decoding import decode_latent
from main.modules.base import EMADiffusionModule
from main.modules.spectral import low_noise_spectral_loss
from main.nets.bottleneck import bottleneck_excess, encode_with_pre_bottleneck, latent_saturation
from main.nets.builders import build_diffae
from main.nets.conditioning import diffae_data_scale
from main.nets.pretrained import load_diffae
from main.nets.weights import load_model_state, model_state_dict


class DMAE(EMADiffusionModule):
    """Diffusion magnitude autoencoder: trains a DiffAE on cropped stereo audio."""

    def __init__(
        self,
        model: Optional[Mapping[str, Any]] = None,
        sample_rate: int = 32000,
        init_from: Optional[str] = None,
        freeze_encoder: bool = False,
        bottleneck_penalty: float = 0.0,
        bottleneck_limit: float = 1.5,
        spectral_loss_weight: float = 0.0,
        spectral_loss_max_sigma: float = 0.3,
        rollout_proba: float = 0.0,
        **training: Any,
    ):
        hparams = {"kind": "diffae", "model": model or {}, "sample_rate": sample_rate, "init_from": init_from,
                   "freeze_encoder": freeze_encoder, "bottleneck_penalty": bottleneck_penalty,
                   "bottleneck_limit": bottleneck_limit, "spectral_loss_weight": spectral_loss_weight,
                   "spectral_loss_max_sigma": spectral_loss_max_sigma, "rollout_proba": rollout_proba}
        super().__init__(hparams, **training)
        self.model = self.build_model()
        if init_from and Path(init_from).is_dir():  # a local copy of a hub DiffAE: its weights, this architecture
            load_model_state(self.model, hub_weights(init_from, prefix="model."))
        elif init_from:
            load_model_state(self.model, model_state_dict(load_diffae(init_from)))
        if freeze_encoder:  # the latent space stays the one a DiffGen was trained on; only the decoder learns
            self.model.encoder.requires_grad_(False)
        self._init_ema()

    def build_model(self) -> nn.Module:
        """A DiffAE of the configured architecture."""
        return build_diffae(**self.hparams.model)

    def diffusion_loss(self, model: nn.Module, batch: Mapping[str, Any], training: bool) -> Tensor:
        """The DiffAE loss: encode the audio, then v-diffusion conditioned on the latent (as the library's
        `DiffusionAE.forward`)."""
        audio = batch["audio"]
        latent, pre = encode_with_pre_bottleneck(model, audio)
        channels = [None] * model.inject_depth + [latent]
        velocity_fn = lambda x, s: model.net(x, s, channels=channels)  # noqa: E731
        target = audio * diffae_data_scale(model)
        rollout = self.hparams.rollout_proba
        if not (training and (self.hparams.spectral_loss_weight or rollout)):  # validation: the v-loss alone
            loss = v_diffusion_loss(velocity_fn, target)
        else:
            if rollout:  # rolled-out items learn from the log-spectral loss alone (main.diffusion): all of them count
                loss, estimate, sigmas, rolled = rollout_loss_and_estimate(velocity_fn, target, rollout)
                sigmas = torch.where(rolled, 0.0, sigmas)
            else:
                loss, estimate, sigmas = v_diffusion_loss_and_estimate(velocity_fn, target)
            spectral = low_noise_spectral_loss(estimate, target, sigmas, self.hparams.spectral_loss_max_sigma)
            self.log("train/spectral_loss", spectral, on_step=True, batch_size=int(audio.shape[0]), sync_dist=True)
            loss = loss + self.hparams.spectral_loss_weight * spectral
        if training and self.hparams.bottleneck_penalty and not self.hparams.freeze_encoder:
            # Keeps the tanh's input where it has a gradient: unchecked, it grows to |x| ~ 50 within 250 steps and
            # the latent becomes a binary code the encoder can no longer change (main.nets.bottleneck).
            excess = bottleneck_excess(pre, self.hparams.bottleneck_limit)
            self.log("train/bottleneck_excess", excess, on_step=True, batch_size=int(audio.shape[0]), sync_dist=True)
            loss = loss + self.hparams.bottleneck_penalty * excess
        return loss

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> Optional[Tensor]:
        """The EMA model's loss, and how much of its latent sits at the bottleneck's bounds (a saturated tanh
        passes the decoder a binary code and the encoder no gradient: main.nets.bottleneck)."""
        loss = super().validation_step(batch, batch_idx)
        if loss is not None:
            saturation = latent_saturation(self.ema_model, self.ema_model.encode(batch["audio"]))
            if saturation is not None:
                self.log("valid/latent_saturation", saturation, on_epoch=True, batch_size=int(batch["audio"].shape[0]),
                         sync_dist=True)
        return loss

    @torch.no_grad()
    def preview(self, batch: Mapping[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        """Real clips and their EMA reconstructions (encode -> diffusion decode)."""
        audio = batch["audio"]
        latent = self.ema_model.encode(audio)
        recon = decode_latent(self.ema_model, latent, self.hparams.preview_steps, self.hparams.preview_sampler,
                              generator)
        return {"real": audio, "reconstruction": recon[..., : audio.shape[-1]]}
