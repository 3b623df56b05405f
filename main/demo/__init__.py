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

This package: `main.demo.lanes` runs the stages (processes, parallel lanes), `main.demo.stages` trains, exports or
copies the models and writes the data, `main.demo.report` adds the stages and the learning curve to the report; the
command line (`python -m main.demo`) is `main` below.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional

from main.demo.lanes import ROOT, cpu_count, eval_lanes, run, run_here, run_lanes, thread_env, training_progress
from main.demo.report import (fidelity_text, learning_curve_rows, logged, stages_section, summarize,
                              write_latent_curve)
from main.demo.stages import (DECODER_FINE_TUNE, DECODER_FINE_TUNE_STEPS, MIN_STAGE_MINUTES, PRETRAINED_DIFFAE,
                              PRETRAINED_DIFFGEN, compose_experiment, copy_pretrained, export, preencode_args,
                              prepare_data, stage_budget, torch_load_step, train_stage, write_dataset)
from main.renames import add_flag_alias

__all__ = ["DECODER_FINE_TUNE", "DECODER_FINE_TUNE_STEPS", "DECODING_STEPS", "FAST_DATA", "MIN_STAGE_MINUTES",
           "PRETRAINED_DIFFAE", "PRETRAINED_DIFFGEN", "ROOT", "compose_experiment", "copy_pretrained", "cpu_count",
           "eval_lanes", "export", "fidelity_text", "learning_curve_rows", "logged", "main", "preencode_args",
           "prepare_data", "run", "run_here", "run_lanes", "stage_budget", "stages_section", "summarize",
           "thread_env", "torch_load_step", "train_stage", "training_progress", "write_dataset",
           "write_latent_curve"]

DECODING_STEPS = 16  # the default demo's DiffAE decoding steps (BENCHMARKS.md, "Sound fidelity")

# --fast: 6 recordings of 1 s per species (3 / 1 / 2 in train / valid / test), so that every species is trained,
# probed and evaluated, in seconds.
FAST_DATA = ["datamodule.synthetic.clips_per_species=6", "+datamodule.synthetic.split_fractions=[0.5,0.17,0.33]"]


def main(argv: Optional[list[str]] = None) -> Path:
    """Command-line entry point; returns the report path."""
    parser = argparse.ArgumentParser(prog="python -m main.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
