"""The training logic DMAE and DiffGen share (`EMADiffusionModule`) and the learning-rate schedule.

AdamW on trainable parameters only, an EMA copy updated after every real optimizer step, validation with the EMA
model at fixed noise, skipping (and counting) steps whose gradients are not finite, refusing to checkpoint
non-finite weights, and saving RNG state for exact resumption.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Optional, Sequence

import pytorch_lightning as pl
import torch
from ema_pytorch import EMA
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import Tensor, nn

from main import faults
from main.checkpointing import (collect_rank_rng_states, gather_from_ranks, non_finite_tensors,
                                restore_rank_rng_states, restore_rng_states, this_rank)

LR_SCHEDULES = ("constant", "cosine")


def adamw(params: list[nn.Parameter], **kwargs: Any) -> torch.optim.AdamW:
    """AdamW, fused (one kernel for all parameters) where PyTorch has it (CPU, CUDA): the same update up to float
    rounding, 6.6x faster for the demo DiffGen's 8.2M parameters on 2 CPU cores (BENCHMARKS.md, "Training speed")."""
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, fused=fused or None, **kwargs)


def lr_factor(step: int, warmup: int, total: float, schedule: str, min_ratio: float) -> float:
    """Learning-rate multiplier at optimizer step `step`: linear warm-up, then constant or cosine decay."""
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def plain(value: Any) -> Any:
    """Hydra/OmegaConf containers as plain Python (so hyper-parameters load with weights_only=True)."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


class EMADiffusionModule(pl.LightningModule):
    """Shared training logic of DMAE and DiffGen; subclasses set `self.model` and implement `diffusion_loss`."""

    model: nn.Module

    # Defaults as in main/conf/training/seed.yaml (tests/test_configs.py compares the two).
    def __init__(
        self,
        hparams: Mapping[str, Any],
        lr: float = 1e-4,
        betas: Sequence[float] = (0.95, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 1e-3,
        ema_beta: float = 0.995,
        ema_power: float = 0.7,
        ema_update_every: int = 1,
        ema_update_after_step: int = 100,
        validation_seed: int = 0,
        preview_steps: int = 100,
        preview_sampler: str = "ddim",
        lr_warmup_steps: int = 0,
        lr_schedule: str = "constant",
        lr_min_ratio: float = 0.1,
    ):
        super().__init__()
        training = dict(lr=lr, betas=list(betas), eps=eps, weight_decay=weight_decay, ema_beta=ema_beta,
                        ema_power=ema_power, ema_update_every=ema_update_every,
                        ema_update_after_step=ema_update_after_step, validation_seed=validation_seed,
                        preview_steps=preview_steps, preview_sampler=preview_sampler,
                        lr_warmup_steps=lr_warmup_steps, lr_schedule=lr_schedule, lr_min_ratio=lr_min_ratio)
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"model.lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        self.save_hyperparameters({k: plain(v) for k, v in {**hparams, **training}.items()})
        self.skipped_nonfinite_steps = 0
        self.skipped_data_items = 0
        self.skipped_by_reason: dict[str, int] = {}
        self.skipped_summary = ""
        self._step_was_skipped = False

    def build_model(self) -> nn.Module:
        """A fresh model of this module's architecture (the online model and its EMA twin)."""
        raise NotImplementedError

    def _init_ema(self) -> None:
        hp = self.hparams
        # The EMA copy is built, not deep-copied: a-unet's U-Net blocks run forward closures that a deepcopy
        # shares with the original, so a deep-copied "EMA" model computes with the online weights.
        twin = self.build_model()
        twin.load_state_dict(self.model.state_dict())
        self.ema = EMA(
            self.model,
            ema_model=twin.requires_grad_(False),
            beta=hp.ema_beta,
            power=hp.ema_power,
            update_every=hp.ema_update_every,
            update_after_step=hp.ema_update_after_step,
            include_online_model=False,
            use_foreach=True,
        )
        self.ema.ema_model.eval()

    @property
    def ema_model(self) -> nn.Module:
        """The smoothed model: the one to export and sample from."""
        return self.ema.ema_model

    def train(self, mode: bool = True) -> "EMADiffusionModule":
        """Lightning's `.train()` must leave the EMA copy (and frozen parts) in eval mode."""
        super().train(mode)
        self.ema.ema_model.eval()
        return self

    def diffusion_loss(self, model: nn.Module, batch: Mapping[str, Any], training: bool) -> Tensor:
        """The diffusion loss of `model` on `batch` (CFG masking only when `training`)."""
        raise NotImplementedError

    def configure_optimizers(self) -> Any:
        """AdamW over the trainable parameters of the online model only (not the EMA copy, not frozen parts),
        with optional linear warm-up and cosine decay to `lr_min_ratio * lr` at the trainer's last step."""
        hp = self.hparams
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = adamw(params, lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, weight_decay=hp.weight_decay)
        if hp.lr_warmup_steps <= 0 and hp.lr_schedule == "constant":
            return optimizer
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else self.trainer.estimated_stepping_batches
        if hp.lr_schedule == "cosine" and not math.isfinite(total):
            raise ValueError("model.lr_schedule=cosine needs a finite trainer.max_steps (or max_epochs)")
        factor = functools.partial(lr_factor, warmup=hp.lr_warmup_steps, total=total, schedule=hp.lr_schedule,
                                   min_ratio=hp.lr_min_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _count_skipped_items(self, batch: Mapping[str, Any], training: bool = False) -> int:
        """Count the batch's skipped items (in training: in total and by reason); returns the batch size."""
        skipped = batch.get("skipped")
        if skipped is not None and training:
            self.skipped_data_items += int(skipped)
            for reason, n in (batch.get("skipped_by_reason") or {}).items():
                self.skipped_by_reason[reason] = self.skipped_by_reason.get(reason, 0) + int(n)
        return int(batch["audio"].shape[0]) if "audio" in batch else int(batch["latent"].shape[0])

    def on_train_batch_start(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Test hook (main.faults): log the batch's dataset indices when asked to."""
        faults.log_items(batch, self.trainer.global_step, self.trainer.current_epoch, batch_idx,
                         self.trainer.global_rank)

    def on_train_batch_end(self, outputs: Any, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Test hook (main.faults): die at a chosen step, after that step's checkpoint callbacks ran."""
        faults.maybe_kill(self.trainer.global_step)

    def skipped_items_summary(self) -> str:
        """One line: training items skipped so far, by reason, summed over the ranks (a collective under DDP)."""
        counts = gather_from_ranks((self.skipped_data_items, dict(self.skipped_by_reason)))
        total = sum(n for n, _ in counts)
        reasons: dict[str, int] = {}
        for _, by_reason in counts:
            for reason, n in by_reason.items():
                reasons[reason] = reasons.get(reason, 0) + n
        detail = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items()))
        return f"skipped {total} training items" + (f" ({detail})" if detail else "") + " (metric data/skipped_items)"

    def on_train_end(self) -> None:
        """Keep the run's summary of skipped items (train.py prints it; every rank takes part in the count)."""
        self.skipped_summary = self.skipped_items_summary()

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Optional[Tensor]:
        """One diffusion loss on a batch; an empty batch (every file failed to load) is skipped."""
        batch_size = self._count_skipped_items(batch, training=True)
        # The count of every rank, summed (a cumulative count: the step's value is the run's total so far).
        self.log("data/skipped_items", float(self.skipped_data_items), on_step=True, reduce_fx="sum",
                 sync_dist=True)
        self._step_was_skipped = batch_size == 0
        if batch_size == 0:
            if self.trainer.world_size == 1:
                return None
            # Under DDP every rank must run backward (gradients are all-reduced): contribute zeros.
            return sum(p.sum() for p in self.model.parameters() if p.requires_grad) * 0.0
        loss = self.diffusion_loss(self.model, batch, training=True)
        # Logged even when non-finite (the step is then skipped): a conditional log would desynchronise DDP ranks.
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size,
                 sync_dist=True)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drop the update when any gradient is NaN/inf: AdamW skips parameters whose grad is None."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        finite = bool(torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()) if grads else True
        self._step_was_skipped = self._step_was_skipped or not finite
        if not finite:
            self.skipped_nonfinite_steps += 1
            for p in self.model.parameters():
                p.grad = None
        self.log("train/skipped_nonfinite_steps", float(self.skipped_nonfinite_steps), on_step=True, reduce_fx="max")

    def optimizer_step(self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Any = None) -> None:
        """Optimizer step, then the EMA update (not after a skipped step)."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if not self._step_was_skipped:
            self.ema.update()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> Optional[Tensor]:
        """EMA-model loss at noise fixed by (validation_seed, batch_idx), leaving the training RNG untouched."""
        batch_size = self._count_skipped_items(batch)
        if batch_size == 0:
            return None
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.hparams.validation_seed + batch_idx)
            loss = self.diffusion_loss(self.ema_model, batch, training=False)
        self.log("valid/loss", loss, on_epoch=True, prog_bar=True, batch_size=batch_size, sync_dist=True)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write non-finite weights; store counters and RNG states."""
        bad = non_finite_tensors(checkpoint["state_dict"])
        if bad:
            raise RuntimeError(f"refusing to save a checkpoint with non-finite weights: {bad[:5]}")
        checkpoint["counters"] = {
            "skipped_nonfinite_steps": self.skipped_nonfinite_steps,
            "skipped_data_items": self.skipped_data_items,
            "skipped_by_reason": dict(self.skipped_by_reason),
        }
        # Skipped items are counted per rank (each rank reads its own share of the data).
        checkpoint["counters_per_rank"] = gather_from_ranks(
            {"skipped_data_items": self.skipped_data_items, "skipped_by_reason": dict(self.skipped_by_reason)})
        # Every rank's RNG states (a collective under DDP: Lightning dumps checkpoints on all ranks).
        checkpoint["rng_states_per_rank"] = collect_rank_rng_states()
        training_files = getattr(getattr(self._trainer, "datamodule", None), "training_files", None)
        if callable(training_files) and self.trainer.is_global_zero:  # only rank 0 writes the file
            files = training_files()
            if files is not None:
                checkpoint["training_files"] = files

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore counters and each rank's RNG states; with another world size than the saved one, DDP ranks are
        reseeded distinctly (the run goes on, but not bit-identically)."""
        counters = checkpoint.get("counters", {})
        self.skipped_nonfinite_steps = int(counters.get("skipped_nonfinite_steps", 0))
        self.skipped_data_items = int(counters.get("skipped_data_items", 0))
        self.skipped_by_reason = {str(k): int(v) for k, v in counters.get("skipped_by_reason", {}).items()}
        per_rank = checkpoint.get("counters_per_rank", [])
        if this_rank() < len(per_rank):
            mine = per_rank[this_rank()]
            self.skipped_data_items = int(mine["skipped_data_items"])
            self.skipped_by_reason = {str(k): int(v) for k, v in mine["skipped_by_reason"].items()}
        rng_per_rank = checkpoint.get("rng_states_per_rank")
        if rng_per_rank is not None and restore_rank_rng_states(rng_per_rank):
            return
        # Rank 0's states: another world size saved the per-rank ones, or checkpoints written before them hold a
        # single-process copy ("rng_states", no longer written).
        single = rng_per_rank[0] if rng_per_rank else checkpoint.get("rng_states")
        if single is None:
            return
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world, rank = torch.distributed.get_world_size(), torch.distributed.get_rank()
            step = int(checkpoint.get("global_step", 0))
            pl.seed_everything(self.hparams.validation_seed + step * world + rank + 1, workers=True, verbose=False)
        else:
            restore_rng_states(single)

    # -- previews (used by main.callbacks.AudioPreviewCallback) ---------------------------------------------

    def preview(self, batch: Mapping[str, Any], generator: torch.Generator) -> dict[str, Tensor]:
        """Audio [N, C, L] to listen to during training, from a fixed batch; keys name the kind of audio."""
        raise NotImplementedError
