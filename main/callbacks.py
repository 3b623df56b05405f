"""Training callbacks shared by DMAE and DiffGen."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from torch import Tensor

from main.audio import save_audio, save_spectrogram_png


def _take(batch: Mapping[str, Any], n: int, device: torch.device) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if key == "skipped":
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
