"""Clips decoded per second on a CPU: one process on every core against parallel 1-core processes (lanes).

The demo's generation and reconstruction run in two lanes of one thread each on 2 cores (`main.demo.run_lanes`),
because small 1-D convolutions do not use two threads well. This measures it on the demo DiffAE: 3 s clips,
16 DPM-Solver++ steps, batch 1.

    python benchmarks/bench_decoding_lanes.py --clips 8 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from main.demo import cpu_count, thread_env  # noqa: E402


def decode(clips: int, steps: int, frames: int) -> None:
    """Decode `clips` random latents of `frames` frames one at a time (the worker of one lane); prints the seconds
    the decoding took, without the start-up."""
    import torch

    from main.inference.decoding import decode_latent
    from main.nets.weights import load_model

    diffae, _ = load_model(ROOT / "pretrained" / "diffae_demo.safetensors", "diffae")
    diffae.eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(clips):
            latent = torch.rand(1, diffae.encoder.out_channels, frames, generator=generator) * 2 - 1
            decode_latent(diffae, latent, steps, "dpmpp-2m", generator=generator)
    print(f"{time.perf_counter() - start:.3f}", flush=True)


def timed_lanes(lanes: int, threads: int, clips_per_lane: int, steps: int, frames: int) -> float:
    """Seconds until the last of `lanes` processes of `threads` threads each, started together, has decoded its
    `clips_per_lane` clips (each process's start-up left out)."""
    env = thread_env(threads)
    command = [sys.executable, __file__, "--worker", str(clips_per_lane), "--steps", str(steps), "--frames",
               str(frames)]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True) for _ in range(lanes)]
    outputs = [p.communicate()[0] for p in processes]
    if any(p.returncode for p in processes):
        raise SystemExit("a lane failed")
    return max(float(out.split()[-1]) for out in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=8, help="clips in all (split between the lanes)")
    parser.add_argument("--steps", type=int, default=16, help="decoding steps")
    parser.add_argument("--frames", type=int, default=1504, help="latent frames (1504: 3 s at 32 kHz)")
    parser.add_argument("--repeats", type=int, default=3, help="alternated runs of each way")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        return decode(args.worker, args.steps, args.frames)
    cores = cpu_count()
    lanes = min(2, cores)
    ratios = []
    for repeat in range(args.repeats):  # alternated, so that a drift of the machine's speed hits both ways alike
        one = timed_lanes(1, cores, args.clips, args.steps, args.frames)
        split = timed_lanes(lanes, max(1, cores // lanes), args.clips // lanes, args.steps, args.frames)
        ratios.append(one / split)
        print(f"run {repeat + 1}: 1 process x {cores} threads {one / args.clips:.2f} s per clip; {lanes} processes x "
              f"{max(1, cores // lanes)} thread(s) {split / args.clips:.2f} s per clip: {one / split:.2f}x")
    print(f"lanes / one process: {statistics.median(ratios):.2f}x the clips per second (median of {len(ratios)}; "
          f"{min(ratios):.2f}-{max(ratios):.2f})")

if __name__ == "__main__":
    main()
