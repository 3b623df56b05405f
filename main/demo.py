"""The offline demo: the whole pipeline on the embedded synthetic bird songs, on a laptop CPU.

    python -m main.demo --out demo          # prepare -> DMAE -> export -> DiffGen -> export -> generate
                                            # -> reconstruct -> evaluate (BirdNET, kNN, FAD) -> report
    python -m main.demo --out demo --fast   # tiny models and a few steps (what the tests run)

Every stage is the command a GPU user runs at full scale (`train.py`, `main.export`, `main.analysis`), only with
the small `*_demo` (or `*_tiny`) experiment configs.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], log: Path) -> None:
    """Run one stage as its own process (as a user would), its output appended to `log`; fail loudly."""
    start = time.monotonic()
    print(f"[demo] {' '.join(command[1:])}", flush=True)
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(command)}\n")
        f.flush()
        result = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"[demo] stage failed (exit {result.returncode}); see {log}")
    print(f"[demo]   done in {time.monotonic() - start:.0f} s", flush=True)


def logged(run_dir: Path, key: str) -> list[float]:
    """The values of metric `key` a run logged (CSV logger), in order."""
    with open(next(run_dir.glob("csv/version_*/metrics.csv")), newline="") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


def main(argv: Optional[list[str]] = None) -> Path:
    """Command-line entry point; returns the report path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo"))
    parser.add_argument("--fast", action="store_true", help="tiny models, a few steps (smoke test)")
    parser.add_argument("--dmae-minutes", type=float, default=8.0)
    parser.add_argument("--diffgen-minutes", type=float, default=7.0)
    parser.add_argument("--per-species", type=int, default=3, help="generated clips per species")
    parser.add_argument("--steps", type=int, default=25, help="sampling and decoding steps (DPM-Solver++)")
    parser.add_argument("--cfg", type=float, default=3.0)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "demo.log"
    python = sys.executable
    size = "tiny" if args.fast else "demo"
    common = [f"paths.root_dir={out}", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]
    if args.fast:
        budgets = {"dmae": ["trainer.max_steps=40"], "diffgen": ["trainer.max_steps=40"]}
    else:
        budgets = {name: [f"trainer.max_time=00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}"]
                   for name, minutes in (("dmae", args.dmae_minutes), ("diffgen", args.diffgen_minutes))}
    diffae = out / "exports" / f"diffae_{size}.safetensors"
    diffgen = out / "exports" / f"diffgen_{size}.safetensors"

    run([python, "train.py", f"exp=dmae_{size}", f"hydra.run.dir={out}/dmae", *common, *budgets["dmae"]], log)
    run([python, "-m", "main.export", str(out / "dmae/checkpoints/last.ckpt"), str(diffae.with_suffix(""))], log)
    run([python, "train.py", f"exp=diffgen_{size}", f"hydra.run.dir={out}/diffgen", f"model.autoencoder={diffae}",
         *common, *budgets["diffgen"]], log)
    run([python, "-m", "main.export", str(out / "diffgen/checkpoints/last.ckpt"), str(diffgen.with_suffix(""))],
        log)

    manifest = next((out / "data/synthetic").glob("*/manifest.csv"))
    seconds = "0.5" if args.fast else "2"
    selection = ["--manifest", str(manifest), "--per-species", str(args.per_species)]
    steps = ["--steps", str(args.steps), "--sampler", "dpmpp-2m"]
    run([python, "-m", "main.analysis", "generate", "--diffae", str(diffae), "--diffgen", str(diffgen), *selection,
         *steps, "--cfg", str(args.cfg), "--seconds", seconds, "--out", str(out / "eval/generated")], log)
    run([python, "-m", "main.analysis", "reconstruct", "--diffae", str(diffae), *selection, *steps,
         "--seconds", seconds, "--out", str(out / "eval/reconstructions")], log)
    run([python, "-m", "main.analysis", "report", "--generated", str(out / "eval/generated"),
         "--reconstructions", str(out / "eval/reconstructions"), "--manifest", str(manifest),
         "--test-per-species", str(args.per_species), "--out", str(out / "report")], log)

    report = out / "report" / "report.md"
    for name in ("dmae", "diffgen"):
        losses = logged(out / name, "valid/loss")  # EMA model at fixed noise: comparable across evaluations
        print(f"[demo] {name}: validation loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} evaluations")
    print(f"[demo] report: {report}\n[demo] generated audio: {out / 'eval/generated'}\n[demo] log: {log}")
    return report


if __name__ == "__main__":
    main()
