"""The demo's stages: training one for a fixed number of steps and exporting it, or copying a pretrained model
instead; the synthetic data set; the configs `train.py` composes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from main.demo.lanes import ROOT, run, run_here

PRETRAINED_DIFFAE = ROOT / "pretrained" / "diffae_demo.safetensors"
# DiffGen trained by `--train-diffgen` (exp=diffgen_demo_preencoded, 1500 steps) on the pretrained DiffAE's latents.
PRETRAINED_DIFFGEN = ROOT / "pretrained" / "diffgen_demo.safetensors"
# The pretrained demo DiffAE's second stage (its provenance's fine_tune), which --from-scratch repeats: the decoder
# alone, with a log-spectral loss on its clean estimates at low noise levels; the latents stay as they are. The
# generated clips' noise floor between syllables drops by 1 dB (BENCHMARKS.md, "Sound fidelity").
DECODER_FINE_TUNE = ["model.freeze_encoder=true", "+model.spectral_loss_weight=0.03", "model.lr=1e-4"]
DECODER_FINE_TUNE_STEPS = 1000


# The time limit is a safety net, not the budget (stages stop on step counts): short stages get at least this many
# minutes, so start-up (imports, text encoder, probe set-up) on a loaded machine does not cut them short.
MIN_STAGE_MINUTES = 5.0


def torch_load_step(path: Path) -> int:
    """The global step stored in a Lightning checkpoint."""
    import torch

    return int(torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)["global_step"])


def stage_budget(steps: int, limit_minutes: float, checkpoint_every: int) -> list[str]:
    """Overrides that train a stage for exactly `steps` steps, with `limit_minutes` as the safety net."""
    minutes = max(limit_minutes, 0.1)
    return [f"trainer.max_steps={steps}", f"trainer.max_time=00:{int(minutes // 60):02d}:{int(minutes % 60):02d}:"
            f"{int(minutes % 1 * 60):02d}", f"callbacks.checkpoint.every_n_train_steps={checkpoint_every}"]


def train_stage(exp: str, run_dir: Path, overrides: list[str], steps: int, seconds_per_step: float,
                limit_factor: float, checkpoint_every: int, weights: Path, log: Path, note: str) -> dict[str, Any]:
    """`python train.py exp=<exp>` for exactly `steps` steps (a time limit of `limit_factor` x the expected time as
    the safety net), its EMA model exported to `weights`; returns the stage's row of the report."""
    limit = max(MIN_STAGE_MINUTES, steps * seconds_per_step * limit_factor / 60)
    seconds = run([sys.executable, "train.py", f"exp={exp}", f"hydra.run.dir={run_dir}", *overrides,
                   *stage_budget(steps, limit, checkpoint_every)], log, limit * 60, run_dir)
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    export(checkpoint, weights, log)
    return {"steps": steps, "seconds": seconds, "limit_minutes": round(limit, 1),
            "steps_done": torch_load_step(checkpoint), "note": note}


def copy_pretrained(source: Path, weights: Path, flag: str) -> dict[str, Any]:
    """Copy a pretrained demo model (weights + JSON) to `weights`; returns its row of the report's stages table."""
    if not source.is_file():
        raise SystemExit(f"[demo] {source} is missing: restore it from git or train it with {flag}")
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(source.with_suffix(suffix), weights.with_suffix(suffix))
    name = source.relative_to(ROOT)
    print(f"[demo] {name} (pretrained on the synthetic training split; {flag} trains it here)")
    return {"steps": 0, "seconds": 0.0, "limit_minutes": 0, "steps_done": None, "note": f"{name} as it is"}


def prepare_data(out: Path, size: str, common: list[str], log: Path) -> Path:
    """The synthetic data set of the DMAE experiment (`exp=dmae_demo`: 30 recordings of 3 s per species, 21 / 3 / 6
    in train / valid / test; the data the pretrained demo DiffAE was trained on), generated once; its manifest."""
    overrides = [f"exp=dmae_{size}", *common]
    return Path(run_here(["-c", "'from main.demo import write_dataset; write_dataset(...)'", *overrides],
                         lambda: write_dataset(overrides), log))


def export(checkpoint: Path, weights: Path, log: Path) -> None:
    """`python -m main.export CHECKPOINT OUTPUT`: the EMA model of a stage's last checkpoint."""
    from main.export import main as export_main

    argv = [str(checkpoint), str(weights.with_suffix(""))]
    run_here(["-m", "main.export", *argv], lambda: export_main(argv), log)


def compose_experiment(overrides: list[str]) -> Any:
    """The config `train.py` composes for `overrides` (e.g. `["exp=diffgen_demo_preencoded"]`)."""
    from hydra import compose, initialize_config_dir

    from main.config import register_resolvers

    register_resolvers()
    with initialize_config_dir(str(ROOT), version_base="1.3"):
        return compose("config", overrides=overrides)


def preencode_args(overrides: list[str]) -> list[str]:
    """main.preencode's --text-encoder and --max-length (the DiffGen experiment's own text encoder settings) and
    --min-seconds: recordings shorter than its crop are zero-padded in audio before encoding, as the audio
    datamodule pads them. (Padded in latent space instead, with zeros, which are not the latent of silence, DiffGen
    learned to end every clip in a zero latent about 60 ms early, which the decoder rendered as a burst.) Then
    --captions with the experiment's datamodule.captions when they are enabled (caption variants)."""
    from main.preencode import caption_args

    cfg = compose_experiment(overrides)
    return ["--text-encoder", str(cfg.model.text_encoder), "--max-length", str(cfg.model.text_encoder_max_length),
            "--min-seconds", repr(cfg.datamodule.crop_length / cfg.sample_rate), *caption_args(cfg.datamodule)]


def write_dataset(overrides: list[str]) -> Path:
    """Generate the synthetic data set an experiment's datamodule uses (`prepare_data` of its config)."""
    from hydra.utils import instantiate

    cfg = compose_experiment(overrides)
    datamodule = instantiate(cfg.datamodule)
    datamodule.prepare_data()
    return datamodule.manifest_path
