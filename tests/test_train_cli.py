"""`train.py` as users run it: experiment configs, start-up config errors, kill-and-resume, loggers (DDP on CPU:
tests/test_faults.py)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from main.config import ConfigError, register_resolvers, validate_config
from tests.conftest import ROOT

EXPERIMENTS = sorted(p.stem for p in (ROOT / "exp").glob("*.yaml"))


def compose_exp(exp: str, *overrides: str):
    register_resolvers()
    with initialize_config_dir(config_dir=str(ROOT), version_base="1.3"):
        return compose(config_name="config", overrides=[f"exp={exp}", *overrides], return_hydra_config=True)


def run_train(root: Path, *overrides: str, timeout: int = 300,
              multirun: bool = False) -> subprocess.CompletedProcess:
    """`python train.py [-m] paths.root_dir=root overrides...`; multirun: one process runs each job of the sweep in turn
    (the jobs' folders: hydra.sweep.dir/<job number>), which saves the start-up of a process per job."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    flags = ["-m"] if multirun else []
    return subprocess.run([sys.executable, "train.py", *flags, f"paths.root_dir={root}", *overrides], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def local_t5(tmp_path_factory) -> str:
    """A 1-layer T5 encoder with t5-base's width (768) and a ByT5 tokenizer, saved like a hub model."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    folder = tmp_path_factory.mktemp("t5")
    config = T5Config(vocab_size=384, d_model=768, d_kv=64, d_ff=256, num_layers=1, num_heads=12)
    T5EncoderModel(config).save_pretrained(folder)
    ByT5Tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("exp", EXPERIMENTS)
def test_every_experiment_composes_and_validates(exp, tmp_path):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("file,sci_name,label,split\n")
    cfg = compose_exp(exp, f"paths.root_dir={tmp_path}")
    if cfg.datamodule.get("manifest") is not None:
        cfg.datamodule.manifest = str(manifest)
    if cfg.datamodule.get("preencoded") is not None:
        (tmp_path / "meta.json").write_text("{}")
        cfg.datamodule.preencoded = str(tmp_path)
    if cfg.model.get("autoencoder") not in (None, "pretrained"):
        cfg.model.autoencoder = None
    if cfg.model.get("init_from") not in (None, "pretrained"):  # a file shipped in the repository (pretrained/)
        cfg.model.init_from = str(ROOT / Path(cfg.model.init_from).relative_to(tmp_path))
    validate_config(cfg)
    assert cfg.model.sample_rate == cfg.datamodule.sample_rate


def count(module: torch.nn.Module) -> float:
    return round(sum(p.numel() for p in module.parameters()) / 1e6, 1)


def test_seed_experiments_instantiate_seed_models(tmp_path, local_t5):
    dmae = instantiate(compose_exp("dmae", f"paths.root_dir={tmp_path}", "model.init_from=null").model)
    assert count(dmae.model) == 185.1 and count(dmae.ema_model) == 185.1
    assert dmae.hparams.ema_beta == 0.995 and dmae.hparams.betas == [0.95, 0.999]
    del dmae
    cfg = compose_exp("diffgen", f"paths.root_dir={tmp_path}", "model.autoencoder=null",
                      f"model.text_encoder={local_t5}")
    diffgen = instantiate(cfg.model)
    assert count(diffgen.model) == 562.6
    assert diffgen.hparams.cfg_mask_proba == 0.1 and diffgen.hparams.text_encoder_max_length == 128
    assert cfg.datamodule.crop_length == 2**20


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["datamodule.crop_length=8100"], "datamodule.crop_length"),
        (["datamodule.manifest=/nonexistent/manifest.csv"], "datamodule.manifest"),
        (["+model.model.chanels=[1]"], "model.model"),
        (["model.model.inject_depth=1"], "model.model.inject_depth"),
        (["model.sample_rate=32000"], "model.sample_rate"),
        (["+ckpt=/nonexistent/last.ckpt"], "ckpt"),
        (["model.lr=abc"], "model.lr"),
        (["datamodule.batch_size=2.5"], "datamodule.batch_size"),
        (["model.betas=[0.9]"], "model.betas"),
        (["model.freeze_encoder=yes"], "model.freeze_encoder"),
        (["model.bottleneck_penalty=-1"], "model.bottleneck_penalty"),
        (["model.bottleneck_limit=0"], "model.bottleneck_limit"),
    ],
)
def test_config_mistakes_fail_at_startup_naming_the_key(overrides, key, tmp_path):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(compose_exp("dmae_tiny", f"paths.root_dir={tmp_path}", *overrides))


def test_a_resume_with_nothing_left_to_train_is_refused_naming_the_key(tmp_path):
    """A checkpoint at max_steps, or whose run used up max_time (Lightning counts it over resumes), is refused at
    start-up with the key to change, instead of a run that trains nothing and says it finished."""
    from main.training import check_resume_has_work

    ckpt = tmp_path / "last.ckpt"
    torch.save({"global_step": 1500, "callbacks": {"Timer": {"time_elapsed": {"train": 788.3}}}}, ckpt)
    cfg = compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", "trainer.max_steps=1500")
    with pytest.raises(ConfigError, match=r"trainer\.max_steps=1500: .* is at step 1500 already"):
        check_resume_has_work(cfg, str(ckpt))
    cfg = compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", "trainer.max_steps=3000",
                      "trainer.max_time=00:00:06:00")
    with pytest.raises(ConfigError, match=r"trainer\.max_time=00:00:06:00: .* has trained 0:13:08 already"):
        check_resume_has_work(cfg, str(ckpt))
    with pytest.raises(ConfigError, match=r"trainer\.max_time='12:00' is not"):
        check_resume_has_work(compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", "trainer.max_steps=3000",
                                          "trainer.max_time='12:00'"), str(ckpt))
    for limit in ("null", "00:00:20:00", "{minutes:20}"):
        check_resume_has_work(compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", "trainer.max_steps=3000",
                                          f"trainer.max_time={limit}"), str(ckpt))


def test_diffgen_shape_mistakes_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.model\.factors"):
        validate_config(compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", "datamodule.crop_length=8256",
                                    "+model.model.factors=[1,4]"))
    with pytest.raises(ConfigError, match=r"text_encoder_max_length"):
        validate_config(compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", "model.text_encoder_max_length=64"))
    with pytest.raises(ConfigError, match=r"model\.model\.data_scale"):
        validate_config(compose_exp("dmae_tiny", f"paths.root_dir={tmp_path}", "model.model.data_scale=0"))
    with pytest.raises(ConfigError, match=r"model\.model\.text_modulation"):
        validate_config(compose_exp("diffgen_tiny", f"paths.root_dir={tmp_path}", "model.model.text_modulation=2"))


def test_bad_config_exits_fast_from_the_command_line(tmp_path):
    start = time.monotonic()
    result = run_train(tmp_path, "exp=dmae_tiny", "datamodule.crop_length=8100")
    assert result.returncode != 0
    assert "datamodule.crop_length=8100 must be a multiple of 64" in result.stderr
    assert "Traceback" not in result.stderr and result.returncode == 2  # one clear line
    assert time.monotonic() - start < 60


def _wait_for(predicate, timeout: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"training exited early:\n{process.stderr.read() if process.stderr else ''}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for training progress")
        time.sleep(0.05)


@pytest.mark.slow
def test_killed_run_resumes_from_last_good_checkpoint(tmp_path):
    """Two behaviours, one kill and one resume:
    - killed from outside (SIGKILL at an arbitrary moment, a checkpoint write included) after its third periodic
      checkpoint, the run's last.ckpt is complete and resumes;
    - the resumed run stops at a max_steps between two periodic saves (every 2 steps, an odd last step): last.ckpt
      still holds the final step, with the EMA (as after a time limit)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    command = [sys.executable, "train.py", f"paths.root_dir={tmp_path}", "exp=dmae_tiny", "trainer.max_steps=100000",
               "callbacks.checkpoint.every_n_train_steps=2", "callbacks.audio_preview.every_n_steps=100000",
               "callbacks.audio_preview.on_train_end=false", "hydra.run.dir=" + str(tmp_path / "run")]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    checkpoints = tmp_path / "run/checkpoints"
    try:
        _wait_for(lambda: len(list(checkpoints.glob("step=*.ckpt"))) >= 3, 240, process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    last = checkpoints / "last.ckpt"
    state = torch.load(last, weights_only=True)  # whatever the kill interrupted, last.ckpt is complete
    step = int(state["global_step"])
    assert step >= 4 and step % 2 == 0
    result = run_train(tmp_path, "exp=dmae_tiny", f"+ckpt={last}", f"trainer.max_steps={step + 3}",
                       "callbacks.checkpoint.every_n_train_steps=2", "callbacks.audio_preview=null",
                       "hydra.run.dir=" + str(tmp_path / "resumed"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"finished at step {step + 3}" in result.stdout
    resumed = tmp_path / "resumed/checkpoints"
    assert torch.load(resumed / f"step={step + 2:08d}.ckpt", weights_only=True)["global_step"] == step + 2
    final = torch.load(resumed / "last.ckpt", weights_only=True)
    assert final["global_step"] == step + 3 and "ema" in " ".join(final["state_dict"])
    assert final["counters"]["skipped_nonfinite_steps"] == 0


def test_interrupted_checkpoint_write_keeps_previous_file(tmp_path, monkeypatch):
    from main.checkpointing import AtomicCheckpointIO

    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, target)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands in for the process dying between write and rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "blob": torch.zeros(1000)}, target)
    assert torch.load(target, weights_only=True) == {"step": 1}
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.slow
def test_diffgen_tiny_trains_from_the_command_line(tmp_path):
    result = run_train(tmp_path, "exp=diffgen_tiny", "trainer.max_steps=4", "hydra.run.dir=" + str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr[-3000:]
    previews = sorted(p.name for p in (tmp_path / "run/previews/step_00000004").iterdir())
    assert "generated_0.wav" in previews and "generated_0.png" in previews
    metrics = (tmp_path / "run/csv/version_0/metrics.csv").read_text()
    assert "train/loss" in metrics and "valid/loss" in metrics
    # the latent species probe (exp's callbacks.latent_species) logged text adherence at step 4
    import csv

    rows = [r for r in csv.DictReader(io.StringIO(metrics)) if r.get("valid/latent_species_top1")]
    assert [int(r["step"]) for r in rows] == [4]
    assert 0.0 <= float(rows[0]["valid/latent_species_top1"]) <= 1.0
    assert 0.0 <= float(rows[0]["valid/latent_species_top1_real"]) <= 1.0
    # the whole architecture (seed defaults merged with the exp's arch groups) is in the run's config and export
    from omegaconf import OmegaConf

    from main.conf import load_arch_yaml
    from main.export import export_checkpoint

    run_config = OmegaConf.load(tmp_path / "run/.hydra/config.yaml")
    assert run_config.model.model == load_arch_yaml("diffgen_arch", "tiny")
    assert run_config.model.autoencoder_model == load_arch_yaml("diffae_arch", "tiny")
    _, sidecar = export_checkpoint(tmp_path / "run/checkpoints/last.ckpt", tmp_path / "export/diffgen")
    assert json.loads(sidecar.read_text())["model"] == load_arch_yaml("diffgen_arch", "tiny")


@pytest.mark.slow
def test_every_logger_option_starts(tmp_path):
    """Each `logger=` the README offers composes and trains (logger=none used to fail on LearningRateMonitor): one
    multirun process, a job per option."""
    loggers = sorted(p.stem for p in (ROOT / "main/conf/logger").glob("*.yaml"))
    result = run_train(tmp_path, "exp=dmae_tiny", f"logger={','.join(loggers)}", "trainer.max_steps=1",
                       "callbacks.audio_preview=null", "trainer.limit_val_batches=0",
                       f"hydra.sweep.dir={tmp_path}/runs", multirun=True)
    assert result.returncode == 0, result.stderr[-2000:]
    for number, logger in enumerate(loggers):
        job = tmp_path / f"runs/{number}"
        assert f"logger={logger}" in (job / ".hydra/overrides.yaml").read_text(), logger
        assert (job / "checkpoints/last.ckpt").is_file(), logger


@pytest.mark.slow
def test_resume_at_epoch_boundary_is_exact_through_train_py(tmp_path):
    """As a user runs it (previews, validation, periodic checkpoints): stopped at the end of epoch 0 (step 4) and
    resumed with +ckpt=last, the run ends with the same weights, EMA and optimizer state as an uninterrupted one.
    (Previews used to draw from the global RNG and shifted the resumed run by up to 5e-4.)
    Also pins +ckpt=last: of the task's two last.ckpt files (uninterrupted, then stopped: one multirun process runs
    both jobs in turn), it resumes from the newest, the stopped run's."""
    common = ["exp=dmae_tiny", "callbacks.checkpoint.every_n_train_steps=2", "callbacks.audio_preview.every_n_steps=2"]
    sweep = tmp_path / "logs/dmae_tiny/multiruns/straight_then_stopped"  # where +ckpt=last looks: the task's logs
    result = run_train(tmp_path, *common, "trainer.max_steps=6,4", f"hydra.sweep.dir={sweep}", multirun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    straight, stopped = sweep / "0/checkpoints/last.ckpt", sweep / "1/checkpoints/last.ckpt"
    assert torch.load(stopped, weights_only=True)["global_step"] == 4
    assert stopped.stat().st_mtime > straight.stat().st_mtime
    result = run_train(tmp_path, *common, "trainer.max_steps=6", "+ckpt=last", f"hydra.run.dir={tmp_path / 'resumed'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "finished at step 6" in result.stdout
    assert f"Restoring states from the checkpoint path at {stopped}" in result.stdout + result.stderr
    a = torch.load(straight, weights_only=True)
    b = torch.load(tmp_path / "resumed/checkpoints/last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6 and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    for x, y in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        assert torch.equal(x["exp_avg"], y["exp_avg"]) and torch.equal(x["exp_avg_sq"], y["exp_avg_sq"])
