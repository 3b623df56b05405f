"""What the caption-variant settings draw, on the demo's synthetic data set (docs/options.md, "Data").

    python benchmarks/caption_variants.py [--epochs 10] [--options exact_p=0.25 ...]

Draws the training captions of the demo's training split (exp=diffgen_demo's data: 30 recordings of 3 s per
species, 21 / 3 / 6 in train / valid / test, generated once into a cache folder) for `--epochs` epochs with
`datamodule.captions` at its defaults (or `--options`), and prints the share of exact labels, of variants keeping
the species, by name form, format and case, their length, and how many distinct strings `main.preencode --captions`
would encode for the train and valid splits. No model: seconds, plus generating the data set once.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from main.data.captions import KEYS, CaptionConfig, caption_fields, caption_record, training_caption  # noqa: E402
from main.data.captions import variant_list  # noqa: E402
from main.data.manifest import read_manifest  # noqa: E402
from main.data.synthetic import default_cache_dir, generate_synthetic_dataset  # noqa: E402
from main.preencode import caption_options  # noqa: E402


def within_one_edit(a: str, b: str) -> bool:
    """Whether `a` becomes `b` by at most one letter dropped, added, replaced, or two neighbours swapped."""
    if a == b:
        return True
    if abs(len(a) - len(b)) > 1:
        return False
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if len(a) == len(b):
        return a[i + 1:] == b[i + 1:] or (a[i:i + 2] == b[i:i + 2][::-1] and a[i + 2:] == b[i + 2:])
    longer, shorter = (a, b) if len(a) > len(b) else (b, a)
    return longer[i + 1:] == shorter[i:]


def misspelt_in(text: str, name: str) -> bool:
    """Whether `text` holds `name` misspelt by one edit (and not as it is)."""
    return name not in text and any(within_one_edit(text[start:start + len(name) + d], name)
                                    for start in range(len(text)) for d in (-1, 0, 1))


def main() -> None:
    """Draw the captions and print the shares."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=12345, help="the training seed (config.yaml's)")
    parser.add_argument("--options", nargs="*", default=[], metavar="KEY=VALUE", help="datamodule.captions keys")
    args = parser.parse_args()
    config = CaptionConfig.from_mapping(caption_options(args.options))
    manifest = generate_synthetic_dataset(default_cache_dir() / "caption_variants_demo", clips_per_species=30,
                                          duration_s=3.0, sample_rate=32000, channels=2, seed=args.seed,
                                          split_fractions=[0.7, 0.1, 0.2])
    rows = read_manifest(manifest, "train")
    counts: Counter[str] = Counter()
    words = []
    for epoch in range(args.epochs):
        for index, row in enumerate(rows):
            label, record = str(row["label"]), caption_record(row)
            text = training_caption(label, record, config, args.seed, epoch, index)
            if text == label:
                counts["exact label"] += 1
                continue
            fields = caption_fields(record, config.birdnet_names)
            low, sci, en = text.lower(), fields.sci_name.lower(), fields.en_name.lower()
            names = {sci, en, f"{sci} ({en})", f"{en} ({sci})"}
            counts["variants"] += 1
            misspelt = misspelt_in(low, sci) or (bool(en) and misspelt_in(low, en))
            counts["species kept"] += sci in low or en in low or misspelt
            counts["species misspelt"] += misspelt
            counts["scientific name only"] += sci in low and en not in low
            counts["English name only"] += en in low and sci not in low
            counts["both names"] += sci in low and en in low
            counts["the name alone"] += low.removeprefix("species: ") in names
            counts["key: value"] += text.startswith(tuple(f"{key}: " for key in KEYS.values()))
            counts["all lower case"] += text == low
            words.append(len(text.split()))
    draws = len(rows) * args.epochs
    print(f"{draws} draws ({len(rows)} training recordings x {args.epochs} epochs); settings {config.as_dict()}")
    print(f"| share | value |\n|---|---|\n| exact label, of draws | {counts['exact label'] / draws:.3f} |")
    for key in ("species kept", "species misspelt", "scientific name only", "English name only", "both names", "the name alone",
                "key: value", "all lower case"):
        print(f"| {key}, of variants | {counts[key] / counts['variants']:.3f} |")
    label_words = np.mean([len(str(row["label"]).split()) for row in rows])
    print(f"| words per variant (per label) | {np.mean(words):.1f} ({label_words:.1f}) |")
    encoded = [row for split in ("train", "valid") for row in read_manifest(manifest, split)]
    strings = {s for row in encoded for s in (str(row["label"]), *variant_list(
        str(row["label"]), caption_record(row), config, str(row["file"])))}
    print(f"| distinct strings pre-encoded (train + valid, {len(encoded)} recordings, {config.variants} variants "
          f"each) | {len(strings)} ({len(strings) / len(encoded):.1f} per recording) |")


if __name__ == "__main__":
    main()
