"""Everything that needs a GPU, in one command and a few minutes, printed as one table (BENCHMARKS.md, "GPU check").

    bash benchmarks/gpu_check.sh                     # a lent GPU: 8 minutes or less (not yet run on one)
    python benchmarks/gpu_check.py --cpu-tiny        # tiny models on the CPU in seconds (tests/test_gpu_check.py)

Rows, each against the original's way of doing the same work (`benchmarks/bench_speed.py`, whose measurements these
are, at the original's model sizes):

- DiffGen training steps/s (the original: t5-base and the DiffAE encoder every step; here: pre-encoded), fp32 with
  TF32 matmuls and bf16 autocast;
- DMAE training steps/s (the original: the library's DiffusionAE loss and PyTorch's default AdamW; here: the DMAE
  module's loss and fused AdamW), both ways;
- text -> audio: seconds, real-time factor and ratio against the original's sampler (DDIM 100 + 100, CFG as two
  forwards), fp32 + TF32;
- peak GPU memory of each side (a column);
- a 2-GPU DDP start (a few steps of `train.py exp=dmae_tiny trainer.devices=2`) when two GPUs are visible.

A row that fails says so in the table (the exit status is then 1) and the others still run; a row not started
within `--budget-s` is skipped, so the command ends in about 8 minutes at most. Each measurement's own lines go to
stderr; stdout is the table.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402

import bench_speed  # noqa: E402

TRAIN_ROWS = ("DiffGen training", "DMAE training")
PRECISIONS = {"fp32 + TF32": False, "bf16 autocast": True}
SAMPLE_ROWS = ("text -> audio, DDIM, batched CFG", "text -> audio, DPM-Solver++(2M)")
DDP_ROW = "2-GPU DDP start"
ROWS = [f"{name}, {precision}" for name in TRAIN_ROWS for precision in PRECISIONS] + [*SAMPLE_ROWS, DDP_ROW]
COLUMNS = ("check", "the original's way", "here", "speed-up", "peak memory (original / here)")
DDP_STEPS = 4


def arch_overrides(group: str) -> dict[str, Any]:
    """The keys a `main/conf/<group>/tiny.yaml` architecture overrides on the seed's (its `defaults` left out)."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(OmegaConf.load(ROOT / "main" / "conf" / group / "tiny.yaml"))
    config.pop("defaults", None)
    return config


def sizes(cpu_tiny: bool) -> dict[str, Any]:
    """What each measurement runs: the original's model sizes on a GPU, the tests' tiny models with `cpu_tiny`."""
    if not cpu_tiny:
        return {"diffgen_train": dict(batch_size=4, crop=2**20, repeats=5),
                "dmae_train": dict(batch_size=8, crop=2**18, repeats=5),
                "sample": dict(latent_length=512, batch_size=1, seed_steps=100, our_steps=25),
                "models": {}, "text": {}}
    diffgen = arch_overrides("diffgen_arch")
    text = dict(vocab_size=1000, d_model=diffgen["embedding_features"], d_kv=32, d_ff=256, num_layers=1, num_heads=2)
    return {"diffgen_train": dict(batch_size=1, crop=4096, repeats=1),
            "dmae_train": dict(batch_size=1, crop=4096, repeats=1),
            "sample": dict(latent_length=8, batch_size=1, seed_steps=3, our_steps=2),
            "models": {"diffae": arch_overrides("diffae_arch"), "diffgen": diffgen}, "text": text}


def memory(seed_gb: Optional[float], ours_gb: Optional[float]) -> str:
    return f"{seed_gb:.1f} / {ours_gb:.1f} GB" if seed_gb is not None else "–"


def train_row(name: str, bf16: bool, plan: dict[str, Any], device: str) -> list[str]:
    """One training row: steps/s of each side, their ratio and peak memory."""
    models = plan["models"]
    if name == "DiffGen training":
        settings = plan["diffgen_train"]
        result = bench_speed.bench_train(**settings, device=device, bf16=bf16, diffae=models.get("diffae"),
                                         diffgen=models.get("diffgen"), text=plan["text"])
    else:
        settings = plan["dmae_train"]
        result = bench_speed.bench_train_dmae(**settings, device=device, bf16=bf16, diffae=models.get("diffae"))
    size = f"batch {settings['batch_size']}, crop 2^{settings['crop'].bit_length() - 1}"
    return [f"{1 / result['seed_s']:.3f} steps/s", f"{1 / result['ours_s']:.3f} steps/s ({size})",
            f"{result['seed_s'] / result['ours_s']:.2f}x", memory(result["seed_memory_gb"], result["ours_memory_gb"])]


def sample_rows(plan: dict[str, Any], device: str) -> dict[str, list[str]]:
    """The two text -> audio rows (one measurement): seconds and real-time factor against the original's."""
    models, settings = plan["models"], plan["sample"]
    result = bench_speed.bench_sample(**settings, device=device, bf16=False, diffae=models.get("diffae"),
                                      diffgen=models.get("diffgen"))
    audio, seed = result["audio_s"], result["seed_s"]
    original = f"{seed:.2f} s, real-time factor {audio / seed:.2f} (DDIM {settings['seed_steps']} + " \
               f"{settings['seed_steps']})"
    peak = f"{result['memory_gb']:.1f} GB (both)"
    rows = {}
    for name, key, steps in ((SAMPLE_ROWS[0], "ddim_s", settings["seed_steps"]),
                             (SAMPLE_ROWS[1], "dpm_s", settings["our_steps"])):
        ours = result[key]
        rows[name] = [original, f"{ours:.2f} s, real-time factor {audio / ours:.2f} ({steps} + {steps} steps, "
                                f"{audio:.2f} s of audio)", f"{seed / ours:.2f}x", peak]
    return rows


def ddp_command(root: Path) -> list[str]:
    """A few DDP steps of the tiny DMAE on two GPUs (what `train.py` runs on a multi-GPU machine)."""
    return [sys.executable, "train.py", "exp=dmae_tiny", "trainer.accelerator=gpu", "trainer.devices=2",
            "trainer.strategy=ddp", f"trainer.max_steps={DDP_STEPS}", "callbacks.audio_preview=null",
            f"paths.root_dir={root}", f"hydra.run.dir={root / 'run'}"]


def ddp_row(device: str, timeout_s: float) -> list[str]:
    """Start DDP on two GPUs when there are two; else say why not."""
    gpus = torch.cuda.device_count() if device.startswith("cuda") else 0
    if gpus < 2:
        return [f"skipped ({'no GPU' if gpus == 0 else '1 GPU'})", "–", "–", "–"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.monotonic()
        try:
            done = subprocess.run(ddp_command(Path(tmp)), cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return [f"failed: no result within {timeout_s:.0f} s", "–", "–", "–"]
        seconds = time.monotonic() - start
    output = done.stdout + done.stderr
    print(output[-4000:], file=sys.stderr)
    if done.returncode != 0 or f"finished at step {DDP_STEPS}" not in output or "MEMBER: 2/2" not in output:
        return [f"failed (exit {done.returncode}; its output is on stderr)", "–", "–", "–"]
    return ["–", f"ok: 2 ranks, {DDP_STEPS} steps in {seconds:.0f} s (start-up included)", "–", "–"]


def environment(device: str) -> str:
    """One line: what ran the check."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    if device.startswith("cuda"):
        machine = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}"
    else:
        machine = f"CPU, {torch.get_num_threads()} threads"
    return (f"GPU check ({device}): {machine}, torch {torch.__version__}, commit {commit or '?'}, "
            f"{datetime.date.today().isoformat()}")


def table(rows: dict[str, list[str]]) -> str:
    """The markdown table, one line per row of ROWS."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join([name, *rows[name]]) + " |" for name in ROWS]
    return "\n".join(lines)


def run_checks(device: str, cpu_tiny: bool, budget_s: float, ddp_timeout_s: float) -> dict[str, list[str]]:
    """Every row, in order; a failure is written into its row, a row not started within `budget_s` is skipped."""
    plan = sizes(cpu_tiny)
    start = time.monotonic()
    rows: dict[str, list[str]] = {}
    steps: list[tuple[list[str], Callable[[], dict[str, list[str]]]]] = []
    for name in TRAIN_ROWS:
        for precision, bf16 in PRECISIONS.items():
            row = f"{name}, {precision}"
            steps.append(([row], lambda name=name, bf16=bf16, row=row: {row: train_row(name, bf16, plan, device)}))
    steps.append((list(SAMPLE_ROWS), lambda: sample_rows(plan, device)))
    steps.append(([DDP_ROW], lambda: {DDP_ROW: ddp_row(device, ddp_timeout_s)}))
    for names, measure in steps:
        elapsed = time.monotonic() - start
        if elapsed > budget_s:
            rows.update({name: [f"skipped (time budget: {elapsed:.0f} s gone)", "–", "–", "–"] for name in names})
            continue
        print(f"[gpu_check] {', '.join(names)} ({elapsed:.0f} s gone)", file=sys.stderr, flush=True)
        try:
            with contextlib.redirect_stdout(sys.stderr):
                rows.update(measure())
        except Exception as error:  # one failed measurement must not hide the others
            message = f"{type(error).__name__}: {error}".replace("|", "/").replace("\n", " ")[:160]
            rows.update({name: [f"failed: {message}", "–", "–", "–"] for name in names})
        finally:
            gc.collect()
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return rows


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point; returns the exit status (1 when a row failed)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-tiny", action="store_true", help="tiny models on the CPU (the suite's smoke test)")
    parser.add_argument("--device", help="default: cuda (cpu with --cpu-tiny)")
    parser.add_argument("--budget-s", type=float, default=360.0,
                        help="start no measurement after this many seconds (default 360: done within 8 min)")
    parser.add_argument("--ddp-timeout-s", type=float, default=150.0, help="limit of the 2-GPU DDP start")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.cpu_tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device visible: run on a GPU machine, or pass --cpu-tiny")
    torch.set_float32_matmul_precision("high")  # TF32 matmuls on GPUs, as config.yaml's matmul_precision
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    start = time.monotonic()
    rows = run_checks(device, args.cpu_tiny, args.budget_s, args.ddp_timeout_s)
    header = f"{environment(device)}; {time.monotonic() - start:.0f} s"
    print(f"{header}\n\n{table(rows)}")
    if args.json:
        args.json.write_text(json.dumps({"environment": header, "columns": COLUMNS, "rows": rows}, indent=2) + "\n")
    return 1 if any(cell.startswith("failed") for cells in rows.values() for cell in cells) else 0


if __name__ == "__main__":
    sys.exit(main())
