"""Text adherence of a demo DiffGen for prompts in the training label format and shorter ones, at several CFG scales.

    python benchmarks/prompt_formats.py [--diffae pretrained/diffae_demo.safetensors] \
        [--diffgen pretrained/diffgen_demo.safetensors] [--seeds 3] [--cfg 1 3 6 10]

One prompt per synthetic species in each format (the full label and the shorter ones users type: names alone,
English names, lower case, a misspelt name), DPM-Solver++ 10 steps from `--seeds` noise seeds; each generated latent
is scored by a latent species probe fitted on fresh recordings (3 per species) of the synthetic species. Prints the
share of species generated right per format and CFG scale with its 95% Wilson interval (N = 10 x seeds latents per
cell), and the mean over the short formats. No decoding: a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from main.analysis.latent_species import synthetic_species_probe, wilson_interval  # noqa: E402
from main.data.captions import misspell  # noqa: E402
from main.data.synthetic import SPECIES  # noqa: E402
from main.demo import PRETRAINED_DIFFAE, PRETRAINED_DIFFGEN  # noqa: E402
from main.inference.guidance import generate_latent  # noqa: E402
from main.models import load_model  # noqa: E402
from main.text import FrozenTextEncoder  # noqa: E402

FULL_LABEL = "the full label format"
FORMATS = {
    FULL_LABEL: "{name}; morning; week 20; 2020; {country}; 3.0 seconds; 3 of 5; {kind}",
    "<species>; morning; <sound type>": "{name}; morning; {kind}",
    "<species>; <sound type>": "{name}; {kind}",
    "the scientific name alone": "{name}",
    "the English name alone": "{en}",
    "<English name> <sound type> (e.g. 'Deep Hooter song')": "{en} {kind}",
    "lower case: <english name> <sound type>": "{en_lower} {kind}",
    "a misspelt scientific name (one edit)": "{typo}",
}


def main() -> None:
    """Fit the probe, generate per format, CFG scale and seed, print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--diffae", type=Path, default=PRETRAINED_DIFFAE)
    parser.add_argument("--diffgen", type=Path, default=PRETRAINED_DIFFGEN)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0, 6.0, 10.0])
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    diffae, _ = load_model(args.diffae, "diffae")
    diffgen, config = load_model(args.diffgen, "diffgen")
    names = [s.sci_name for s in SPECIES]
    probe, real = synthetic_species_probe(diffae)
    encoder = FrozenTextEncoder(config["text_encoder"], config["text_encoder_max_length"])

    print("| prompt | " + " | ".join(f"CFG {c:g}" for c in args.cfg) + " |")
    print("|---|" + "---|" * len(args.cfg))
    typo_rng = np.random.default_rng(0)
    short: dict[float, list[bool]] = {cfg: [] for cfg in args.cfg}
    for label, template in FORMATS.items():
        prompts = [template.format(name=s.sci_name, country=s.countries[0], kind=s.types[0], en=s.en_name,
                                   en_lower=s.en_name.lower(), typo=misspell(s.sci_name, typo_rng)) for s in SPECIES]
        embedding, mask = encoder(prompts)
        cells = []
        for cfg in args.cfg:
            right = []
            for seed in range(args.seeds):
                noise = torch.randn((len(names), *real.shape[1:]), generator=torch.Generator().manual_seed(seed))
                with torch.no_grad():
                    latents = generate_latent(diffgen.eval(), embedding, mask, noise, args.steps, cfg, "dpmpp-2m")
                right += [p == n for p, n in zip(probe.predict(latents), names)]
            if label != FULL_LABEL:
                short[cfg] += right
            low, high = wilson_interval(int(np.sum(right)), len(right))
            cells.append(f"{np.mean(right):.2f} [{low:.2f}, {high:.2f}]")
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    print("| mean over the short formats | " + " | ".join(f"{np.mean(short[c]):.2f} (N = {len(short[c])})"
                                                       for c in args.cfg) + " |")

if __name__ == "__main__":
    main()
