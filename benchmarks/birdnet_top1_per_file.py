"""BirdNET's top-1 species for every file of a clips folder (real recordings prepared with
`python -m main.data.prepare --packaged OUT`, or a folder written by `python -m main.analysis reconstruct`/`generate`),
how often it is the file's species per species and overall, with N and a 95% Wilson interval.

    python benchmarks/birdnet_top1_per_file.py --clips data/real_birds [--json top1.json]

Prints a Markdown table (package, version, licence, species, file, BirdNET's top-1 and its confidence, hit) when
the folder has the packaged source's recordings.csv, else (file, species, top-1, hit), then the per-species and
overall counts. docs/real_birds.md holds what it printed for the packaged recordings.
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
from main.analysis.clips import clips_from_folder
from main.analysis.latent_species import wilson_interval


def top1_rows(folder: Path, cache_dir: Optional[Path], workers: Optional[int]) -> list[dict[str, Any]]:
    """One row per clip: its species, BirdNET's top-1 label and confidence, and whether they agree."""
    clips = clips_from_folder(folder)
    scores = BirdNet(cache_dir=cache_dir, n_workers=workers, show_progress=False).score(clips.paths)
    provenance: dict[str, dict[str, str]] = {}
    table = folder / "recordings.csv"
    if table.is_file():
        with open(table, newline="", encoding="utf-8") as handle:
            provenance = {str((folder / row["file"]).resolve()): row for row in csv.DictReader(handle)}
    rows = []
    for index, (path, species) in enumerate(zip(clips.paths, clips.species)):
        best = int(np.argmax(scores.confidences[index]))
        top1 = scores.sci_names[best]
        rows.append({
            **{key: provenance.get(str(Path(path).resolve()), {}).get(key, "")
               for key in ("package", "version", "license", "path")},
            "file": Path(path).name, "sci_name": species, "top1": top1,
            "confidence": float(scores.confidences[index, best]), "chunks": int(scores.chunks[index]),
            "hit": normalize_name(top1) == normalize_name(species),
        })
    return rows


def proportion(hits: int, total: int) -> dict[str, Any]:
    """hits / total with its 95% Wilson interval."""
    low, high = wilson_interval(hits, total)
    return {"hits": hits, "n": total, "rate": hits / total if total else float("nan"), "ci95": [low, high]}


def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-species and overall top-1 agreement, and which species BirdNET named for each species' files."""
    per_species: dict[str, Any] = {}
    for species in sorted({row["sci_name"] for row in rows}):
        own = [row for row in rows if row["sci_name"] == species]
        named: dict[str, int] = {}
        for row in own:
            named[row["top1"]] = named.get(row["top1"], 0) + 1
        per_species[species] = {**proportion(sum(row["hit"] for row in own), len(own)),
                                "top1_named": dict(sorted(named.items(), key=lambda item: -item[1]))}
    return {"overall": proportion(sum(row["hit"] for row in rows), len(rows)), "per_species": per_species}


def markdown(rows: Sequence[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The per-file table and the per-species table as Markdown."""
    with_provenance = any(row["package"] for row in rows)
    head = (["package", "version", "licence"] if with_provenance else []) + [
        "species", "file", "BirdNET top-1 (confidence)", "hit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = ([row["package"], row["version"], row["license"]] if with_provenance else []) + [
            f"*{row['sci_name']}*", f"`{row['path'] or row['file']}`", f"*{row['top1']}* ({row['confidence']:.2f})",
            "yes" if row["hit"] else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| species | N | BirdNET top-1 = species | rate [95% CI] | BirdNET's top-1 names |",
              "|---|---|---|---|---|"]
    entries = [*summary["per_species"].items(), ("all", summary["overall"])]
    for species, entry in entries:
        named = ", ".join(f"*{name}* {count}" for name, count in entry.get("top1_named", {}).items())
        low, high = entry["ci95"]
        lines.append(f"| {'all' if species == 'all' else f'*{species}*'} | {entry['n']} | {entry['hits']} | "
                     f"{entry['rate']:.2f} [{low:.2f}, {high:.2f}] | {named} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    """Score the folder, print the tables, optionally write the JSON; returns the rows and the summary."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=Path, required=True, help="folder with clips.csv")
    parser.add_argument("--cache-dir", type=Path, help="BirdNET result cache (default: main.analysis.birdnet's)")
    parser.add_argument("--workers", type=int, help="BirdNET worker processes")
    parser.add_argument("--json", type=Path, help="also write the rows and the summary here")
    args = parser.parse_args(argv)
    rows = top1_rows(args.clips, args.cache_dir, args.workers)
    summary = summarise(rows)
    print(markdown(rows, summary))
    result = {"rows": rows, "summary": summary}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":  # BirdNET's worker processes re-import the main script
    main()
