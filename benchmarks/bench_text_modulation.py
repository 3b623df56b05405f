"""Training-step cost of DiffGen's `text_modulation` against the plain U-Net, demo size, in one run on one machine.

    python benchmarks/bench_text_modulation.py [--steps 10]

Alternates forward + backward + AdamW steps of the demo DiffGen (main/conf/diffgen_arch/demo.yaml) with and without
the pooled-text path on the demo's batch (16 x 16 channels x 1024 latent frames, 32 MiniLM tokens); prints the
median seconds per step of each and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from main.conf import load_arch_yaml  # noqa: E402
from main.inference.guidance import diffgen_velocity  # noqa: E402
from main.nets.builders import build_diffgen  # noqa: E402


def main() -> None:
    """Time both variants, alternating, after two warm-up steps each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = dict(load_arch_yaml("diffgen_arch", "demo"))
    models = {flag: build_diffgen(**{**config, "text_modulation": flag}) for flag in (False, True)}
    optimizers = {flag: torch.optim.AdamW(model.parameters(), 1e-3) for flag, model in models.items()}
    x, sigmas = torch.randn(16, config["in_channels"], 1024), torch.rand(16)
    embedding = torch.randn(16, 32, config["embedding_features"])
    mask = torch.arange(32) < torch.randint(8, 33, (16, 1))
    times: dict[bool, list[float]] = {False: [], True: []}
    for step in range(args.steps + 2):
        for flag, model in models.items():
            start = time.perf_counter()
            diffgen_velocity(model, x, sigmas, embedding, mask).pow(2).mean().backward()
            optimizers[flag].step()
            optimizers[flag].zero_grad()
            if step >= 2:
                times[flag].append(time.perf_counter() - start)
    plain, modulated = statistics.median(times[False]), statistics.median(times[True])
    for flag, name in ((False, "plain U-Net"), (True, "text_modulation")):
        print(f"{name:16s} {sum(p.numel() for p in models[flag].parameters()) / 1e6:.2f}M parameters, "
              f"{statistics.median(times[flag]):.3f} s/step")
    print(f"ratio (text_modulation / plain): {modulated / plain:.3f}  ({args.steps} steps each, "
          f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
