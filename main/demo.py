"""The offline demo: the whole pipeline on the embedded synthetic bird songs, on a laptop CPU.

    python -m main.demo --out demo                 # pretrained demo DiffAE and DiffGen -> generate (CFG 3 and
                                                   # CFG 1) -> reconstruct -> evaluate -> report
    python -m main.demo --out demo --train-diffgen # train DiffGen on the demo DiffAE's latents first (pre-encode,
                                                   # 1500 steps, with its learning curve in the report)
    python -m main.demo --out demo --from-scratch  # train the demo DiffAE from scratch too (much longer)
    python -m main.demo --out demo --fast          # tiny models trained for a few steps (what the tests run)

As the seed starts its DiffAE from a pretrained one, the demo starts from `pretrained/diffae_demo.safetensors` and
`pretrained/diffgen_demo.safetensors` (trained on the synthetic training split by the commands this demo runs with
`--from-scratch` and `--train-diffgen`; provenance in their JSON and docs/demo.md). Every stage is the command a GPU
user runs at full scale (`train.py`, `main.export`, `main.preencode`, `main.analysis`) with the small `*_demo` (or
`*_tiny`) experiment configs. Stages train for a fixed number of steps, so a slower machine trains as much, only
longer; a time limit per stage is a safety net that the report flags when it cuts a stage short. When DiffGen
trains, its text adherence is logged by the latent species probe (`valid/latent_species_top1`) and drawn as the
learning curve.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional

from main.renames import add_flag_alias

ROOT = Path(__file__).resolve().parents[1]
DECODING_STEPS = 16  # the default demo's DiffAE decoding steps (BENCHMARKS.md, "Sound fidelity")

# --fast: 6 recordings of 1 s per species (3 / 1 / 2 in train / valid / test), so that every species is trained,
# probed and evaluated, in seconds.
FAST_DATA = ["datamodule.synthetic.clips_per_species=6", "+datamodule.synthetic.split_fractions=[0.5,0.17,0.33]"]
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

def run(command: list[str], log: Path, budget_s: Optional[float] = None, run_dir: Optional[Path] = None,
        threads: Optional[int] = None) -> float:
    """Run one stage as its own process (as a user would), its output appended to `log`, with a progress bar
    (showing a training stage's latest step and loss); fail loudly. `threads` caps the process's CPU threads
    (OMP_NUM_THREADS). Returns the stage's wall time in seconds."""
    from tqdm.auto import tqdm

    start = time.monotonic()
    env = None if threads is None else thread_env(threads)
    print(f"[demo] {' '.join(command[1:])}", flush=True)
    with open(log, "a") as f, tqdm(total=round(budget_s) if budget_s else None, unit="s", leave=False,
                                   desc=run_dir.name if run_dir else command[2], disable=run_dir is None) as bar:
        f.write(f"\n$ {' '.join(command)}\n")
        f.flush()
        process = subprocess.Popen(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
        while process.poll() is None:
            time.sleep(1.0)
            bar.update(min(round(time.monotonic() - start), bar.total or 10**9) - bar.n)
            if run_dir is not None:
                bar.set_postfix_str(training_progress(run_dir), refresh=False)
    if process.returncode != 0:
        raise SystemExit(f"[demo] stage failed (exit {process.returncode}); see {log}")
    seconds = time.monotonic() - start
    print(f"[demo]   done in {seconds:.0f} s", flush=True)
    return seconds


def run_lanes(lanes: list[list[list[str]]], log: Path) -> float:
    """Run independent stages in parallel lanes (each lane's commands one after another), the CPU's threads split
    evenly between the lanes; each lane's output is appended to `log` when all are done, a failure is raised after.
    On 2 cores two 1-thread processes decode 1.1-1.4x as many clips per second as one 2-thread process
    (BENCHMARKS.md, "Sampling speed"). Returns the wall time in seconds."""
    start = time.monotonic()
    threads = max(1, cpu_count() // len(lanes))
    lane_logs = [log.with_name(f"{log.stem}.lane{i}{log.suffix}") for i in range(len(lanes))]
    failures: list[str] = []

    def work(commands: list[list[str]], lane_log: Path) -> None:
        try:
            for command in commands:
                run(command, lane_log, threads=threads)
        except SystemExit:
            failures.append(" ".join(command[1:3]))

    workers = [threading.Thread(target=work, args=args) for args in zip(lanes, lane_logs)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with open(log, "a") as f:
        for lane_log in lane_logs:
            f.write(lane_log.read_text() if lane_log.is_file() else "")
            lane_log.unlink(missing_ok=True)
    if failures:
        raise SystemExit(f"[demo] stage failed ({', '.join(failures)}); see {log}")
    return time.monotonic() - start


def eval_lanes() -> int:
    """Parallel lanes for the generation and reconstruction stages: 2 on a CPU with 2 or more cores, else 1."""
    import torch

    return 1 if torch.cuda.is_available() or cpu_count() < 2 else 2


def thread_env(threads: int) -> dict[str, str]:
    """This process's environment with the CPU threads of a child process's math libraries capped at `threads`."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def cpu_count() -> int:
    """The CPU cores this process may use (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def run_here(command: list[str], entry: Callable[[], Any], log: Path) -> Any:
    """A quick stage (an export, a path lookup) called in this process, where a new one would spend longer importing
    torch than working; logged as the command a user runs. Returns what `entry` returns."""
    start = time.monotonic()
    print(f"[demo] {' '.join(command)}", flush=True)
    with open(log, "a") as f, contextlib.redirect_stdout(f):
        f.write(f"\n$ python {' '.join(command)}\n")
        result = entry()
    print(f"[demo]   done in {time.monotonic() - start:.0f} s", flush=True)
    return result


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


def learning_curve_rows(out: Path, stages: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Latent-space text adherence of DiffGen against its training steps (logged by the latent species probe),
    one row per logged evaluation and CFG scale, plus the probe on real validation latents (the ceiling)."""
    rows: list[dict[str, Any]] = []
    run_dir = out / "diffgen"
    files = list(run_dir.glob("csv/version_*/metrics.csv"))
    if not files:
        return rows
    with open(files[0], newline="") as f:
        records = list(csv.DictReader(f))
    keys = sorted({k for r in records for k in r if k.startswith("valid/latent_species_top1_cfg")})
    seconds_per_step = stages["DiffGen"]["seconds"] / max(stages["DiffGen"]["steps"], 1)
    for record in records:
        for key in keys + ["valid/latent_species_top1_real"]:
            if record.get(key):
                step = int(record["step"])
                label = ("real validation latents" if key.endswith("_real")
                         else f"generated latents, CFG {key.rsplit('cfg', 1)[1]}")
                rows.append({"clips": label, "step": step, "minutes": round(step * seconds_per_step / 60, 2),
                             "latent_top1": float(record[key])})
    return rows


def write_latent_curve(rows: list[dict[str, Any]], out_dir: Path) -> str:
    """learning_curve.csv/.png (latent top-1 against DiffGen steps) and the report section that shows them."""
    from main.analysis.report import write_learning_curve

    caption = ("Logged by the latent species probe while DiffGen trained (`valid/latent_species_top1*`): latents "
               "generated for the validation prompts (3 per species, 10 sampling steps) classified by a linear "
               "probe fitted on the training recordings' DiffAE latents; dotted: the probe on the real validation "
               "latents (its ceiling).")
    return write_learning_curve(rows, out_dir, ["clips", "step", "minutes", "latent_top1"],
                                "Text adherence during training", caption, x="step", y="latent_top1",
                                xlabel="DiffGen training steps", ylabel="latent species top-1", chance=0.1)


def stages_section(stages: dict[str, dict[str, Any]]) -> str:
    """The report section on what each training stage did (and whether its time limit cut it short)."""
    lines = ["\n## Training stages\n", "| stage | steps asked | steps done | minutes | note |", "|---|---|---|---|---|"]
    for name, s in stages.items():
        note = s.get("note", "")
        if s.get("steps_done") is not None and s["steps_done"] < s["steps"]:
            note = f"**stopped by its time limit ({s['limit_minutes']} min) before its step count**"
        done = "–" if s.get("steps_done") is None else s["steps_done"]
        lines.append(f"| {name} | {s['steps']} | {done} | {s['seconds'] / 60:.1f} | {note} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[list[str]] = None) -> Path:
    """Command-line entry point; returns the report path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo"))
    parser.add_argument("--fast", action="store_true", help="tiny models, a few steps (smoke test)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="train the demo DiffAE from scratch instead of starting from the pretrained one (then "
                             "fine-tune its decoder, as the pretrained one was)")
    parser.add_argument("--dmae-steps", type=int, help="DiffAE training steps (default: 0 = use the pretrained "
                                                        "demo DiffAE as it is; exp=dmae_demo's trainer.max_steps with --from-scratch)")
    parser.add_argument("--train-diffgen", action="store_true",
                        help="train DiffGen on the demo data (1500 steps, 15-26 min on 2 cores) instead of using "
                             "pretrained/diffgen_demo; implied by --from-scratch, --fast and --dmae-steps")
    parser.add_argument("--diffgen-steps", type=int, help="DiffGen training steps (default 1500; implies "
                                                           "--train-diffgen)")
    parser.add_argument("--time-limit-factor", type=float, default=3.0,
                        help="each training stage's time limit, as a multiple of its expected time on 2 cores")
    parser.add_argument("--per-species", type=int, default=10, help="generated clips per species (main CFG scale)")
    parser.add_argument("--cfg1-per-species", type=int, default=5,
                        help="generated clips per species at CFG 1, the comparison (at most --per-species; 5 "
                             "instead of 10 saves a minute or two of the default demo on 2 cores)")
    parser.add_argument("--sampling-steps", type=int, default=15,
                        help="DiffGen sampling steps (DPM-Solver++; 15 score as 25 on the demo, a generation run "
                             "takes 13%% less: BENCHMARKS.md)")
    add_flag_alias(parser, "--steps", "sampling_steps", type=int)
    parser.add_argument("--decoding-steps", type=int,
                        help="DiffAE decoding steps (DPM-Solver++; default 16, with --fast: --sampling-steps; 16 "
                             "leave a noise floor between syllables 2.2 dB above the recordings' where 12 leave 3.6 "
                             "dB, at 4/3 of the cost: BENCHMARKS.md, 'Sound fidelity')")
    parser.add_argument("--embedding-scale", type=float, default=3.0,
                        help="classifier-free guidance scale of the main evaluation (CFG 1 is shown beside it)")
    add_flag_alias(parser, "--cfg", "embedding_scale", type=float)
    args = parser.parse_args(argv)
    decoding_steps = args.decoding_steps or (args.sampling_steps if args.fast else DECODING_STEPS)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "demo.log"
    python = sys.executable
    size = "tiny" if args.fast else "demo"
    common = [f"paths.root_dir={out}", "callbacks.progress_bar=null", "trainer.enable_progress_bar=false"]
    data = FAST_DATA if args.fast else []
    probe = ["callbacks.latent_species.every_n_steps=50"] if args.fast else []
    scratch = args.from_scratch or args.fast
    if args.dmae_steps is not None:
        dmae_steps = args.dmae_steps
    elif scratch:  # the shipped model's whole schedule, as exp=dmae_demo sets it
        dmae_steps = 40 if args.fast else int(compose_experiment(["exp=dmae_demo"]).trainer.max_steps)
    else:
        dmae_steps = 0
    # the pretrained DiffGen learned the pretrained DiffAE's latents: another DiffAE needs its own DiffGen
    train_diffgen = args.train_diffgen or args.diffgen_steps is not None or dmae_steps > 0
    diffgen_steps = args.diffgen_steps if args.diffgen_steps is not None else (200 if args.fast else 1500)
    # Expected seconds per step on 2 cores, for the time limits: DiffGen measured 0.58 s on an Intel Xeon and 1.02 s on
    # an AMD EPYC (BENCHMARKS.md, "Demo quality"), so its limit is 3 x 0.7 s x 1500 steps, 52 min.
    per_step = {"dmae": 0.05 if args.fast else 0.8, "diffgen": 0.05 if args.fast else 0.7}
    stages: dict[str, dict[str, Any]] = {}
    diffae = out / "exports" / f"diffae_{size}.safetensors"
    diffgen = out / "exports" / f"diffgen_{size}.safetensors"
    diffae.parent.mkdir(parents=True, exist_ok=True)

    if dmae_steps > 0:
        init = [] if scratch else [f"model.init_from={PRETRAINED_DIFFAE}", "model.lr=1e-4"]
        base = diffae.with_name(f"diffae_{size}_base.safetensors") if scratch else diffae
        stages["DiffAE (DMAE)"] = train_stage(
            f"dmae_{size}", out / "dmae", [*common, *data, *init], dmae_steps, per_step["dmae"], args.time_limit_factor,
            max(dmae_steps // 4, 1), base, log,
            "from scratch" if scratch else "fine-tuned from the pretrained demo DiffAE")
        if scratch:  # then the decoder alone, as the pretrained demo DiffAE was made
            decoder_steps = 10 if args.fast else DECODER_FINE_TUNE_STEPS
            stages["DiffAE decoder"] = train_stage(
                f"dmae_{size}", out / "dmae_decoder", [*common, *data, f"model.init_from={base}", *DECODER_FINE_TUNE],
                decoder_steps, per_step["dmae"], args.time_limit_factor, decoder_steps, diffae, log,
                "encoder frozen, log-spectral loss")
    else:
        stages["DiffAE (DMAE)"] = copy_pretrained(PRETRAINED_DIFFAE, diffae, "--from-scratch")
    manifest = prepare_data(out, size, [*common, *data], log)
    if train_diffgen:
        preencoded = out / "data" / f"preencoded_{size}"
        run([python, "-m", "main.preencode", "--manifest", str(manifest), "--diffae", str(diffae),
             *preencode_args([f"exp=diffgen_{size}_preencoded", *common]), "--out", str(preencoded), "--overwrite"],
            log)
        stages["DiffGen"] = train_stage(
            f"diffgen_{size}_preencoded", out / "diffgen",
            [f"model.autoencoder={diffae}", f"datamodule.preencoded={preencoded}", *common, *probe,
             # no audio preview (6-10 s on 2 cores): the report evaluates the clips; the probe logs the curve
             "callbacks.audio_preview=null"],
            diffgen_steps, per_step["diffgen"], args.time_limit_factor, max(diffgen_steps // 4, 1), diffgen, log,
            "from pre-encoded latents")
    else:
        stages["DiffGen"] = copy_pretrained(PRETRAINED_DIFFGEN, diffgen, "--train-diffgen")

    seconds = "1" if args.fast else "3"  # the synthetic recordings' length
    # --batched: 16 clips through the models together; on 2 cores the DiffAE decoding bounds it and it saves only
    # ~3% (100 clips: 209 vs 215 s, BENCHMARKS.md "Sampling speed"), on a GPU far more
    steps = ["--sampling-steps", str(args.sampling_steps), "--decoding-steps", str(decoding_steps),
             "--sampler", "dpmpp-2m", "--batch-size", "16", "--batched"]
    folders = {"generated": out / "eval/generated", "generated (CFG 1)": out / "eval/generated_cfg1"}
    generate = {name: [python, "-m", "main.analysis", "generate", "--diffae", str(diffae), "--diffgen", str(diffgen),
                       "--manifest", str(manifest), "--per-species", str(count), *steps, "--embedding-scale", str(cfg),
                       "--seconds", seconds, "--out", str(folders[name])]
                for name, cfg, count in (("generated", args.embedding_scale, args.per_species),
                                         ("generated (CFG 1)", 1.0, min(args.cfg1_per_species, args.per_species)))}
    reconstruct = [python, "-m", "main.analysis", "reconstruct", "--diffae", str(diffae), "--manifest", str(manifest),
                   "--decoding-steps", str(decoding_steps), "--sampler", "dpmpp-2m", "--batch-size", "16",
                   "--seconds", seconds, "--out", str(out / "eval/reconstructions")]
    # On a CPU, two lanes of about equal work (100 clips; 50 + 60) on half the cores each; on a GPU one after another
    lanes = [[generate["generated"]], [generate["generated (CFG 1)"], reconstruct]]
    seconds_eval = run_lanes(lanes if eval_lanes() == 2 else [[command for lane in lanes for command in lane]], log)
    print(f"[demo] generation and reconstruction: {seconds_eval:.0f} s", flush=True)
    run([python, "-m", "main.analysis", "report", "--generated", str(folders["generated"]),
         "--also", f"generated (CFG 1)={folders['generated (CFG 1)']}",
         "--reconstructions", str(out / "eval/reconstructions"), "--manifest", str(manifest),
         "--spectrograms", "10", "--out", str(out / "report")], log)

    report = out / "report" / "report.md"
    rows = learning_curve_rows(out, stages)
    with open(report, "a") as f:
        f.write(stages_section(stages))
        if rows:
            f.write(write_latent_curve(rows, report.parent))
    summarize(out, report, stages)
    return report


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


def summarize(out: Path, report: Path, stages: dict[str, dict[str, Any]]) -> None:
    """Print the headline figures of the report's metrics and probe files."""
    metrics = json.loads((report.parent / "metrics.json").read_text())["results"]
    for name, result in metrics.items():
        knn = (result.get("knn") or {})
        latent = (result.get("latent_species") or {}).get("generated") or {}
        text = f"[demo] {name}: kNN top-1 {knn['accuracy']:.3f}" if knn else f"[demo] {name}:"
        if knn.get("ci95"):
            text += f" [{knn['ci95'][0]:.2f}, {knn['ci95'][1]:.2f}] (N = {knn['n_query']})"
        if latent:
            text += f"; latent top-1 {latent['accuracy']:.3f} [{latent['ci95'][0]:.2f}, {latent['ci95'][1]:.2f}]"
        print(text)
        fidelity = result.get("fidelity")
        if fidelity:
            print(f"[demo]   {fidelity_text(fidelity)}")
    for name, s in stages.items():
        print(f"[demo] {name}: {s['steps_done'] if s['steps_done'] is not None else 0} steps in "
              f"{s['seconds'] / 60:.1f} min ({s['note']})")
    print(f"[demo] report: {report}\n[demo] generated audio: {out / 'eval/generated'}\n[demo] log: {out / 'demo.log'}")


def fidelity_text(fidelity: dict[str, Any]) -> str:
    """One line of a set's fidelity figures: FAD over the floor, clipping, noise floor and rhythm."""
    ratio = fidelity.get("fad_birdnet_ratio")
    floor = fidelity.get("noise_floor_db_vs_real")
    distance = fidelity.get("rhythm_log2_distance")
    return (f"FAD/floor {'–' if ratio is None else f'{ratio:.2f}'}; clipped {fidelity['clipping']['clipped_clips']}"
            f"/{fidelity['clipping']['n_clips']}; noise floor {'–' if floor is None else f'{floor:+.1f}'} dB vs "
            f"real; rhythm {fidelity['rhythm_species_within_20pct']}/{fidelity['rhythm_n_species']} species within "
            f"20% (log2 distance {'–' if distance is None else f'{distance:.2f}'})")


if __name__ == "__main__":
    main()
