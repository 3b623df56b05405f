"""The training run behind `train.py`: validate the config, build everything from it, fit (or resume)."""

from __future__ import annotations

import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, Timer
from pytorch_lightning.utilities.exceptions import MisconfigurationException

from main.checkpointing import AtomicCheckpointIO
from main.compat.migrate import migrate_if_original
from main.config import ConfigError, validate_config
from main.nets.original import read_checkpoint


def find_last_checkpoint(search_dir: Path) -> Path:
    """The most recently written `last.ckpt` under `search_dir` (for `+ckpt=last`)."""
    candidates = sorted(search_dir.rglob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise ConfigError(f"ckpt=last: no last.ckpt found under {search_dir}")
    return candidates[-1]


def resolve_checkpoint(cfg: DictConfig) -> Optional[str]:
    """The checkpoint path to resume from: `ckpt` as given, or the newest last.ckpt of this task for 'last'."""
    ckpt = cfg.get("ckpt")
    if ckpt is None:
        return None
    if str(ckpt) == "last":
        return str(find_last_checkpoint(Path(cfg.paths.log_dir) / str(cfg.task_name)))
    return str(Path(str(ckpt)).expanduser())


def check_resume_has_work(cfg: DictConfig, ckpt_path: str) -> None:
    """Refuse a resume that would stop before its first step: the checkpoint already reached `trainer.max_steps`,
    or its run used up `trainer.max_time` (Lightning counts the time limit over resumes), instead of a run that
    prints "finished" and trains nothing."""
    checkpoint = read_checkpoint(ckpt_path)
    step = int(checkpoint.get("global_step", 0))
    max_steps = cfg.trainer.get("max_steps", -1)
    if max_steps is not None and 0 <= max_steps <= step:
        raise ConfigError(f"trainer.max_steps={max_steps}: {ckpt_path} is at step {step} already; raise "
                          "trainer.max_steps to train on")
    max_time = cfg.trainer.get("max_time")
    if max_time is None:
        return
    try:  # the Timer that Lightning builds from trainer.max_time, restored as the resume would restore it
        timer = Timer(duration=OmegaConf.to_container(max_time) if isinstance(max_time, DictConfig) else max_time)
    except (MisconfigurationException, TypeError) as error:
        raise ConfigError(f'trainer.max_time={max_time!r} is not "DD:HH:MM:SS" or a dict of days, hours, minutes, '
                          "seconds") from error
    timer.load_state_dict(checkpoint.get("callbacks", {}).get("Timer", {}))
    if timer.time_remaining() <= 0:
        raise ConfigError(f"trainer.max_time={max_time}: the run in {ckpt_path} has trained "
                          f"{timedelta(seconds=round(timer.time_elapsed()))} already (the limit counts over resumes); "
                          "raise it or set trainer.max_time=null to train on")


def _instantiate_all(group: Optional[DictConfig]) -> list[Any]:
    return [instantiate(c) for c in (group or {}).values() if c is not None and "_target_" in c]


# The EMA copy and frozen encoders are in eval mode on purpose.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")


def save_final_checkpoint(trainer: pl.Trainer) -> None:
    """Write last.ckpt at the final step when the run stopped between periodic saves (trainer.max_time, a
    max_steps that is no multiple of every_n_train_steps, Ctrl-C): the last steps are never lost."""
    checkpoint = trainer.checkpoint_callback
    if not isinstance(checkpoint, ModelCheckpoint) or not checkpoint.save_last or checkpoint.dirpath is None:
        return
    if trainer.global_step == 0 or getattr(checkpoint, "_last_global_step_saved", -1) == trainer.global_step:
        return
    path = Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
    trainer.save_checkpoint(path)  # all ranks call it; rank 0 writes (atomically, through the IO plugin)
    checkpoint.last_model_path = str(path)


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the model the config describes; returns the final logged metrics."""
    ckpt_path = resolve_checkpoint(cfg)
    original = migrate_if_original(ckpt_path, cfg)  # adapts cfg to a checkpoint of the original code, else None
    validate_config(cfg)
    if ckpt_path is not None and original is None:
        check_resume_has_work(cfg, ckpt_path)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.datamodule, _convert_="all")
    model = instantiate(cfg.model, _convert_="all")
    if original is not None:
        ckpt_path = original.resume(model)
    callbacks = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    if not loggers:  # logger=none: callbacks that only feed a logger have nothing to do
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    save_final_checkpoint(trainer)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    if trainer.is_global_zero:
        checkpoint = trainer.checkpoint_callback
        last = getattr(checkpoint, "last_model_path", "") if checkpoint else ""
        if getattr(model, "skipped_summary", ""):
            print(model.skipped_summary)
        print(f"finished at step {trainer.global_step}; metrics: "
              + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        if last:
            print(f"last checkpoint: {last}\nexport the EMA model with: python -m main.export {last}")
    return metrics
