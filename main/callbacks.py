"""Training callbacks shared by DMAE and DiffGen."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor

from main.audio import save_audio, save_spectrogram_png
from main.checkpointing import rng_neutral


def _take(batch: Mapping[str, Any], n: int, device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if key in ("skipped", "skipped_by_reason", "items"):
            continue
        out[key] = value[:n].to(device) if isinstance(value, Tensor) else list(value)[:n]
    return out


class AudioPreviewCallback(pl.Callback):
    """Every `every_n_steps`, renders EMA previews of a fixed validation batch (reconstructions for DMAE,
    generations for its labels for DiffGen) and writes WAV + spectrogram PNG files to `<run>/previews/step_N/`,
    also logging them to wandb or TensorBoard when those loggers are used."""

    def __init__(self, every_n_steps: int = 1000, num_items: int = 4, seed: int = 0, on_train_end: bool = True):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"callbacks.audio_preview.every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self.num_items = num_items
        self.seed = seed
        self.run_on_train_end = on_train_end
        self._batch: Optional[dict[str, Any]] = None
        self._last_step = -1
        self.written: list[Path] = []

    def _fixed_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Optional[dict[str, Any]]:
        if self._batch is None:
            datamodule = trainer.datamodule
            loader = datamodule.val_dataloader() if datamodule is not None else None
            for batch in loader or []:
                if len(batch.get("text", batch.get("audio", []))) > 0:
                    self._batch = _take(batch, self.num_items, pl_module.device)
                    break
        return self._batch

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """Render previews when the global step reaches a multiple of `every_n_steps`."""
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.render(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A last preview of the final weights."""
        if self.run_on_train_end and trainer.global_step != self._last_step:
            self.render(trainer, pl_module)

    @torch.no_grad()
    def render(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[Path]:
        """Write (and log) the previews of the current EMA model; returns the files written."""
        with rng_neutral():
            return self._render(trainer, pl_module)

    def _render(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[Path]:
        self._last_step = trainer.global_step
        if not trainer.is_global_zero:
            return []
        batch = self._fixed_batch(trainer, pl_module)
        if batch is None:
            return []
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        was_training = pl_module.training
        pl_module.eval()
        try:
            previews = pl_module.preview(batch, generator)
        finally:
            pl_module.train(was_training)
        sample_rate = int(pl_module.hparams.sample_rate)
        out_dir = Path(trainer.default_root_dir) / "previews" / f"step_{trainer.global_step:08d}"
        texts = batch.get("text", [])
        files = []
        for kind, audio in previews.items():
            for i, clip in enumerate(audio):
                title = f"{kind} {i}" + (f": {texts[i]}" if i < len(texts) else "")
                wav = save_audio(out_dir / f"{kind}_{i}.wav", clip, sample_rate)
                png = save_spectrogram_png(out_dir / f"{kind}_{i}.png", clip, sample_rate, title)
                files += [wav, png]
                self._log(trainer, f"preview/{kind}_{i}", clip, wav, png, title, sample_rate)
        self.written += files
        return files

    @staticmethod
    def _log(trainer: pl.Trainer, key: str, clip: Tensor, wav: Path, png: Path, caption: str,
             sample_rate: int) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_audio(key=key, audios=[str(wav)], step=trainer.global_step, caption=[caption])
                logger.log_image(key=f"{key}_spectrogram", images=[str(png)], step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                import matplotlib.image

                logger.experiment.add_audio(key, clip.float().mean(0, keepdim=True).cpu().clamp(-1, 1),
                                            trainer.global_step, sample_rate)
                image = torch.from_numpy(matplotlib.image.imread(str(png))[..., :3]).permute(2, 0, 1)
                logger.experiment.add_image(f"{key}_spectrogram", image, trainer.global_step)


def stack_items(items: list[Mapping[str, Any]], device: torch.device) -> dict[str, Any]:
    """Items of a dataset as one batch: tensors stacked onto `device`, anything else as lists."""
    return {key: torch.stack([item[key] for item in items]).to(device) if isinstance(items[0][key], Tensor)
            else [item[key] for item in items] for key in items[0]}


class LatentSpeciesCallback(pl.Callback):
    """Text adherence of a training DiffGen, measured in latent space without decoding audio.

    At fit start a `LatentSpeciesClassifier` is fitted on the DiffAE latents of `reference_per_species` training
    recordings per species (of the `max_species` most frequent ones); `valid/latent_species_top1_real` logs how
    well it classifies real validation latents (the ceiling). Every `every_n_steps` (and at the end) the EMA model
    generates one latent per validation prompt (`per_species` per species, fixed noise) at each CFG scale, and
    `valid/latent_species_top1` (first scale) and `valid/latent_species_top1_cfg<scale>` log the fraction
    classified as the prompted species, to every logger. Training RNG is left untouched.
    """

    def __init__(self, every_n_steps: int = 1000, per_species: int = 3, reference_per_species: int = 20,
                 max_species: Optional[int] = 50, cfg_scales: tuple[float, ...] = (1.0,), steps: int = 10,
                 sampler: str = "dpmpp-2m", batch_size: int = 32, seed: int = 0, method: str = "ridge"):
        super().__init__()
        if every_n_steps < 1:
            raise ValueError(f"callbacks.latent_species.every_n_steps must be >= 1, got {every_n_steps}")
        if not cfg_scales:
            raise ValueError("callbacks.latent_species.cfg_scales must name at least one scale")
        self.every_n_steps, self.per_species = every_n_steps, per_species
        self.reference_per_species = reference_per_species
        self.max_species, self.cfg_scales, self.steps, self.sampler = max_species, tuple(cfg_scales), steps, sampler
        self.batch_size, self.seed, self.method = batch_size, seed, method
        self.classifier: Any = None
        self._prompts: Optional[list[dict[str, Any]]] = None
        self._last_step = -1
        self.history: list[dict[str, float]] = []

    def _latents(self, pl_module: Any, items: list[dict[str, Any]]) -> tuple[Tensor, Tensor, Tensor]:
        parts = [pl_module.encode_batch(stack_items(items[i:i + self.batch_size], pl_module.device))
                 for i in range(0, len(items), self.batch_size)]
        return tuple(torch.cat([p[k] for p in parts]) for k in range(3))  # type: ignore[return-value]

    @torch.no_grad()
    @rng_neutral()
    def setup_probe(self, trainer: pl.Trainer, pl_module: Any) -> None:
        """Fit the classifier on training latents and collect the validation prompts."""
        from main.analysis.latent_species import LatentSpeciesClassifier

        datamodule = trainer.datamodule
        if not hasattr(pl_module, "encode_batch") or not hasattr(datamodule, "species_items"):
            raise TypeError("callbacks.latent_species needs a DiffGen model and a datamodule with species_items "
                            "(BirdSoundDataModule with with_text=true, or LatentDataModule)")
        train_split = getattr(datamodule, "train_split", None) or datamodule.hparams.train_split
        val_split = getattr(datamodule, "val_split", None) or datamodule.hparams.val_split
        reference = datamodule.species_items(train_split, self.reference_per_species, self.max_species, self.seed)
        latents, _, _ = self._latents(pl_module, reference)
        self.classifier = LatentSpeciesClassifier.fit(latents.cpu(), [r["sci_name"] for r in reference],
                                                      self.method)
        known = set(self.classifier.species)
        prompts = [p for p in datamodule.species_items(val_split, self.per_species, None, self.seed)
                   if p["sci_name"] in known]
        if not prompts:
            raise ValueError(f"callbacks.latent_species: no {val_split!r} recording of the probed species")
        real, embedding, mask = self._latents(pl_module, prompts)
        self._prompts = [{"embedding": embedding[i], "mask": mask[i], "sci_name": p["sci_name"]}
                         for i, p in enumerate(prompts)]
        self._latent_shape = tuple(real.shape[1:])
        self.real_accuracy = self.classifier.evaluate(real.cpu(), [p["sci_name"] for p in prompts])["accuracy"]

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fit the probe before the first step (a wrong setup fails here, not after hours)."""
        self.setup_probe(trainer, pl_module)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        """Measure when the global step reaches a multiple of `every_n_steps`."""
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self._last_step:
            self.measure(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """A last measurement of the final weights."""
        if trainer.global_step != self._last_step:
            self.measure(trainer, pl_module)

    @torch.no_grad()
    @rng_neutral()
    def measure(self, trainer: pl.Trainer, pl_module: Any, log: bool = True) -> dict[str, float]:
        """Generate latents for the validation prompts with the EMA model and score them."""
        from main.inference.guidance import generate_latent

        self._last_step = trainer.global_step
        if self._prompts is None:
            self.setup_probe(trainer, pl_module)
        assert self._prompts is not None
        names = [p["sci_name"] for p in self._prompts]
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.randn((len(names), *self._latent_shape), generator=generator).to(pl_module.device)
        result = {"step": float(trainer.global_step), "real": float(self.real_accuracy)}
        for scale in self.cfg_scales:
            generated = []
            for i in range(0, len(names), self.batch_size):
                chunk = self._prompts[i:i + self.batch_size]
                embedding = torch.stack([p["embedding"] for p in chunk])
                mask = torch.stack([p["mask"] for p in chunk])
                generated.append(generate_latent(pl_module.ema_model, embedding, mask,
                                                 noise[i:i + len(chunk)], self.steps, scale, self.sampler).cpu())
            result[f"cfg{scale:g}"] = float(self.classifier.evaluate(torch.cat(generated), names)["accuracy"])
        self.history.append(result)
        if log:
            metrics = {"valid/latent_species_top1": result[f"cfg{self.cfg_scales[0]:g}"],
                       "valid/latent_species_top1_real": result["real"],
                       **{f"valid/latent_species_top1_cfg{s:g}": result[f"cfg{s:g}"] for s in self.cfg_scales}}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)
        return result
