"""Does a DiffAE keep real birds recognisable? Reconstruct the held-out real recordings with one or more exported
DiffAEs and ask BirdNET for each file's top-1 species, before and after.

    python -m main.data.prepare --packaged data/real_birds --splits 0.6 0.1 0.3 --seed 1
    python benchmarks/real_birds_diffae.py --data data/real_birds \
        --diffae real=pretrained/diffae_real_birds.safetensors demo=pretrained/diffae_demo.safetensors \
        --out eval/real_birds --json eval/real_birds/summary.json

For every model: the share of the held-out recordings that BirdNET names right whose reconstruction BirdNET still
names right ("kept", with N and a 95% Wilson interval), the per-file table, and the fidelity metrics of the
reconstructions against their originals (noise floor, hard clipping, syllable rate per species). Whole recordings
are reconstructed (mixed lengths and sample rates, resampled to the model's rate), decoded as every entry point
decodes them (DPM-Solver++, 50 steps by default). The held-out splits default to valid and test: the recordings that
`exp=dmae_real_birds` never trains on.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
from main.analysis.birdnet import BirdNet, normalize_name
from main.analysis.fidelity import clipping, file_features, noise_floor, rhythm
from main.analysis.generate import reconstruct_from_manifest
from main.analysis.latent_species import wilson_interval
from main.data.manifest import read_manifest


def top1(scores: Any, index: int) -> tuple[str, float]:
    """BirdNET's top-1 species of file `index` and its confidence."""
    best = int(np.argmax(scores.confidences[index]))
    return scores.sci_names[best], float(scores.confidences[index, best])


def proportion(hits: int, total: int) -> dict[str, Any]:
    """hits / total with its 95% Wilson interval."""
    low, high = wilson_interval(hits, total)
    return {"hits": hits, "n": total, "rate": hits / total if total else float("nan"), "ci95": [low, high]}


def held_out_rows(manifest: Path, splits: Sequence[str]) -> list[dict[str, Any]]:
    """The manifest rows of the held-out splits, in manifest order."""
    return [row for split in splits for row in read_manifest(manifest, split)]


def reconstruction_of(folder: Path, source: str) -> Path:
    """The reconstruction of manifest file `source` in a `reconstruct` folder (its clips.csv names the source)."""
    with open(folder / "clips.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["source"] == source:
                return folder / row["file"]
    raise FileNotFoundError(f"{folder}/clips.csv has no reconstruction of {source}")


def evaluate(data: Path, models: dict[str, Path], out: Path, splits: Sequence[str], steps: int,
             birdnet_cache: Optional[Path]) -> dict[str, Any]:
    """Reconstruct, score with BirdNET and measure fidelity; returns the per-file rows and per-model summaries."""
    manifest = data / "manifest.csv"
    rows = held_out_rows(manifest, splits)
    for name, diffae in models.items():
        for split in splits:
            reconstruct_from_manifest(out / name / split, diffae, manifest, split, steps=steps, sampler="dpmpp-2m",
                                      seconds=None, batch_size=1, show_progress=False)
    flat = {name: [reconstruction_of(out / name / str(row["split"]), str(row["file"])) for row in rows]
            for name in models}
    originals = [str(row["path"]) for row in rows]
    birdnet = BirdNet(cache_dir=birdnet_cache, show_progress=False)
    scores = birdnet.score(originals + [str(p) for name in models for p in flat[name]])
    table = []
    for i, row in enumerate(rows):
        species, (label, confidence) = str(row["sci_name"]), top1(scores, i)
        entry = {"file": str(row["file"]), "split": str(row["split"]), "sci_name": species,
                 "seconds": float(row.get("duration") or 0), "sample_rate": int(row.get("sample_rate") or 0),
                 "original_top1": label, "original_confidence": confidence,
                 "original_hit": normalize_name(label) == normalize_name(species)}
        for m, name in enumerate(models):
            label, confidence = top1(scores, len(rows) * (m + 1) + i)
            entry[f"{name}_top1"], entry[f"{name}_confidence"] = label, confidence
            entry[f"{name}_hit"] = normalize_name(label) == normalize_name(species)
        table.append(entry)
    species = [str(row["sci_name"]) for row in rows]
    reference = [file_features(path) for path in originals]
    right = [e for e in table if e["original_hit"]]
    summary: dict[str, Any] = {"held_out_splits": list(splits), "n_files": len(table),
                               "original_top1": proportion(len(right), len(table))}
    for name in models:
        features = [file_features(path) for path in flat[name]]
        summary[name] = {
            "diffae": str(models[name]),
            "kept": proportion(sum(e[f"{name}_hit"] for e in right), len(right)),
            "top1_all_files": proportion(sum(e[f"{name}_hit"] for e in table), len(table)),
            "noise_floor": noise_floor(features, species, reference, species),
            "clipping": clipping(features),
            "rhythm": rhythm(features, species, reference, species),
        }
    return {"files": table, "summary": summary}


def markdown(result: dict[str, Any], models: Sequence[str]) -> str:
    """The per-file table and the per-model summary as Markdown."""
    head = "| file | split | species | s | Hz | original top-1 | " + " | ".join(f"{m} top-1" for m in models) + " |"
    lines = [head, "|" + "---|" * (6 + len(models))]
    for e in result["files"]:
        cells = [f"`{e['file']}`", e["split"], f"*{e['sci_name']}*", f"{e['seconds']:.2f}", str(e["sample_rate"]),
                 f"*{e['original_top1']}* ({e['original_confidence']:.2f}){'' if e['original_hit'] else ' ✗'}"]
        cells += [f"*{e[f'{m}_top1']}* ({e[f'{m}_confidence']:.2f}){'' if e[f'{m}_hit'] else ' ✗'}" for m in models]
        lines.append("| " + " | ".join(cells) + " |")
    s = result["summary"]
    o = s["original_top1"]
    lines += ["", f"originals: BirdNET's top-1 is the species for {o['hits']} / {o['n']} held-out files", "",
              "| DiffAE | kept (of the originals BirdNET names right) | top-1, all files | noise floor vs "
              "original | clipped files | syllable rate within 20% |", "|---|---|---|---|---|---|"]
    for m in models:
        k, a, nf, cl, rh = (s[m]["kept"], s[m]["top1_all_files"], s[m]["noise_floor"], s[m]["clipping"],
                            s[m]["rhythm"])
        interval = nf["ci95"] or [float("nan")] * 2
        lines.append(f"| {m} | {k['hits']} / {k['n']} = {k['rate']:.2f} [{k['ci95'][0]:.2f}, {k['ci95'][1]:.2f}] | "
                     f"{a['hits']} / {a['n']} = {a['rate']:.2f} [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}] | "
                     f"{nf['noise_floor_db_vs_real']:+.1f} dB [{interval[0]:+.1f}, {interval[1]:+.1f}] | "
                     f"{cl.get('clipped_clips', cl)} | {rh['species_within_20pct']} / {rh['n_species']} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder prepared with main.data.prepare --packaged")
    parser.add_argument("--diffae", nargs="+", required=True, metavar="NAME=FILE", help="exported DiffAEs")
    parser.add_argument("--out", type=Path, required=True, help="reconstructions go here (resumable)")
    parser.add_argument("--splits", nargs="+", default=["valid", "test"], help="held-out splits")
    parser.add_argument("--steps", type=int, default=50, help="decoding steps (DPM-Solver++; default 50)")
    parser.add_argument("--birdnet-cache", type=Path, help="BirdNET result cache (default main.analysis.birdnet's)")
    parser.add_argument("--json", type=Path, help="also write the rows and the summary here")
    args = parser.parse_args(argv)
    models = {}
    for item in args.diffae:
        name, _, path = item.partition("=")
        if not path:
            parser.error(f"--diffae {item!r}: expected NAME=FILE")
        models[name] = Path(path)
    result = evaluate(args.data, models, args.out, args.splits, args.steps, args.birdnet_cache)
    print(markdown(result, list(models)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
