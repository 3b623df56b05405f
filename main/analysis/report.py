"""`report.md` (+ PNG plots and `metrics.json`) for a folder of generated clips against the real test clips.

Tables: headline metrics of generated clips, real test clips (the ceiling), DiffAE reconstructions and the
real reference clips (the floor of the distances), each with its N; BirdNET's coverage of the test species;
per-species results; the sweep. Plots: metrics vs CFG scale (with sweep results), per-species accuracy,
kNN confusion matrix, spectrograms of real vs generated clips for a few prompts.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from main.analysis.clips import ClipSet, clips_from_folder, clips_from_manifest, read_clip_rows
from main.analysis.evaluate import evaluate_sets, write_json
from main.analysis.plots import (plot_confusion, plot_learning_curve, plot_per_species, plot_spectrogram_grid,
                                 plot_sweep)
from main.files import PathLike

REPORT_FILE = "report.md"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        return "–" if not np.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _pair(value: Optional[float], real: Optional[float]) -> Optional[str]:
    """'1.20 (1.35)': a measured value with the real clips' value beside it (None without)."""
    if value is None:
        return None
    return f"{value:.2f} ({_fmt(real, 2)})"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def spectrogram_pairs(generated_dir: PathLike, generated: ClipSet, test: ClipSet, manifest: PathLike,
                      count: int) -> list[tuple[str, Optional[str], str]]:
    """Up to `count` (species, real, generated) triples, one per species: the recording whose label prompted
    the generated clip when it is known, else a test clip of the species."""
    from main.data.manifest import read_manifest

    by_file = {str(r["file"]): r["path"] for r in read_manifest(manifest)}
    rows = {str(Path(generated_dir) / r["file"]): r for r in read_clip_rows(generated_dir)}
    pairs: list[tuple[str, Optional[str], str]] = []
    seen: set[str] = set()
    for path, species in sorted(zip(generated.paths, generated.species), key=lambda item: item[1]):
        if species in seen:
            continue
        seen.add(species)
        source = by_file.get(str(rows.get(path, {}).get("source", "")))
        if source is None:
            source = next((p for p, s in zip(test.paths, test.species) if s == species), None)
        pairs.append((species, source, path))
        if len(pairs) >= count:
            break
    return pairs


def write_report(
    out_dir: PathLike,
    generated: PathLike,
    manifest: PathLike,
    split: str = "test",
    test_per_species: Optional[int] = None,
    reference_split: Optional[str] = "train",
    reference_per_species: Optional[int] = 20,
    reconstructions: Optional[PathLike] = None,
    sweep: Optional[PathLike] = None,
    birdnet: Optional[Any] = None,
    threshold: float = 0.25,
    k: int = 5,
    logmel: bool = True,
    spectrograms: int = 4,
    seed: int = 0,
    show_progress: bool = True,
    also: Optional[Mapping[str, PathLike]] = None,
) -> Path:
    """Evaluate the generated clips (and the optional reconstructions and `also` folders of clips, e.g. the same
    prompts at CFG 1, by name) against the test split and write `report.md`, `metrics.json` and PNG plots into
    `out_dir`; returns the report's path. A folder's `latent_species.json` (written by `generate`) adds its
    latent-space text adherence to the tables."""
    from main.analysis.sweep import read_sweep

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = clips_from_folder(generated, name="generated")
    test = clips_from_manifest(manifest, split, per_species=test_per_species, seed=seed, name=f"real {split}")
    reference = None
    if reference_split:
        reference = clips_from_manifest(manifest, reference_split, per_species=reference_per_species, seed=seed,
                                        name=f"real {reference_split}")
    sets: dict[str, ClipSet] = {"generated": gen}
    folders: dict[str, Path] = {"generated": Path(generated)}
    for name, folder in (also or {}).items():
        sets[name] = clips_from_folder(folder, name=name)
        folders[name] = Path(folder)
    if reconstructions is not None:
        sets["reconstructions"] = clips_from_folder(reconstructions, name="reconstructions")
    sets[test.name] = test
    from main.analysis.fidelity import FeatureCache

    features = FeatureCache()
    results = evaluate_sets(sets, test, reference, birdnet, threshold, k, logmel, show_progress, features=features)
    for name, folder in folders.items():
        probe = folder / "latent_species.json"
        if probe.is_file():
            results[name]["latent_species"] = json.loads(probe.read_text())
    if reference is not None:
        # The real reference set: how far real recordings are from each other (the floor of the distances).
        results.update(evaluate_sets({reference.name: reference}, test, None, birdnet, threshold, k, logmel,
                                     show_progress, fidelity_reference=reference, features=features))
    sweep_data = read_sweep(sweep) if sweep is not None else None
    write_json(out / "metrics.json", {"settings": {"generated": str(generated), "manifest": str(manifest),
                                                   "split": split, "reference_split": reference_split,
                                                   "reconstructions": str(reconstructions) if reconstructions
                                                   else None, "threshold": threshold, "k": k},
                                      "results": results})
    images: dict[str, Optional[Path]] = {
        "per_species": plot_per_species({n: r for n, r in results.items() if n != (reference.name if reference
                                                                                      else None)},
                                        out / "per_species.png"),
        "sweep": plot_sweep(sweep_data, out / "sweep.png") if sweep_data else None,
        "spectrograms": plot_spectrogram_grid(spectrogram_pairs(generated, gen, test, manifest, spectrograms),
                                              out / "spectrograms.png") if spectrograms > 0 else None,
        "confusion": plot_confusion(results["generated"]["knn"], out / "confusion.png",
                                    f"kNN on generated clips (N={len(gen)})") if "knn" in results["generated"]
        else None,
    }
    text = _markdown(results, gen, test, reference, sweep_data, images, threshold, k, birdnet is not None)
    path = out / REPORT_FILE
    path.write_text(text, encoding="utf-8")
    return path


def with_interval(result: Mapping[str, Any]) -> Optional[str]:
    """'0.870 [0.78, 0.93]' from a result with 'accuracy' and 'ci95' (None when there is no accuracy)."""
    accuracy = result.get("accuracy")
    if accuracy is None:
        return None
    interval = result.get("ci95")
    return f"{accuracy:.3f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


FIDELITY_CAPTION = (
    "Fidelity (`main/analysis/fidelity.py`), on the audio as written, against the real reference clips: FAD "
    "BirdNET / floor is the set's BirdNET FAD to the test clips over that of real reference clips of the same N "
    "and species mix (1 = as close as other real recordings; interval over 10 random floor subsets); clipped "
    "clips: share with samples at full scale; noise floor: the quiet frames' level below the syllables' (band "
    "150 Hz-15 kHz), minus the real clips' of the same species (0 dB = as quiet as real, bootstrap interval over "
    "clips); rhythm: species whose syllable rate is within 20% of the real rate, and the mean log2 distance of "
    "rate, syllable and gap durations (0 = the same, 1 = a factor of 2).")


def fidelity_cells(result: Optional[Mapping[str, Any]]) -> list[Optional[str]]:
    """The summary table's fidelity cells of one set: FAD ratio, clipping, noise floor, rhythm (None without)."""
    if not result:
        return [None] * 5
    fad, clip, floor = result.get("fad_birdnet") or {}, result["clipping"], result["noise_floor"]

    def interval(value: Optional[float], ci: Optional[Sequence[float]], digits: int = 2) -> Optional[str]:
        if value is None or value != value:
            return None
        return f"{value:.{digits}f}" + (f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else "")

    return [interval(fad.get("ratio"), fad.get("ci95")),
            interval(clip["clipped_fraction"], clip["clipped_ci95"]) + f" ({clip['clipped_clips']}/{clip['n_clips']})",
            interval(floor["noise_floor_db_vs_real"], floor.get("ci95"), 1),
            f"{result['rhythm_species_within_20pct']} / {result['rhythm_n_species']}",
            _fmt(result.get("rhythm_log2_distance"), 2)]


def _markdown(results: Mapping[str, Mapping[str, Any]], gen: ClipSet, test: ClipSet, reference: Optional[ClipSet],
              sweep: Optional[Mapping[str, Any]], images: Mapping[str, Optional[Path]], threshold: float, k: int,
              with_birdnet: bool) -> str:
    parts = ["# Generated bird sounds: evaluation report", ""]
    parts.append(f"Generated clips: **{len(gen)}** ({len(set(gen.species))} species). Compared with {test.name}: "
                 f"**{len(test)}** clips ({len(set(test.species))} species)."
                 + (f" kNN reference ({reference.name}): **{len(reference)}** clips." if reference else ""))
    parts.append("")
    header = ["set", "N clips", f"kNN top-1 (k={k}) [95% CI]", "latent top-1 [95% CI]",
              "FAD BirdNET / floor [95%]", "clipped clips [95% CI]", "noise floor vs real, dB [95% CI]",
              "rhythm: species within 20%", "rhythm log2 distance", "macro AP",
              "N species (AP)", "top-1", "top-5", f"detected @ {threshold:g}", "FAD BirdNET", "N clips (set / test)",
              "FAD log-mel", "N frames (set / test)"]
    rows = []
    for name, r in results.items():
        bird, knn, fad = r.get("birdnet", {}), r.get("knn", {}), r.get("fad", {})
        lm, bn = fad.get("logmel", {}), fad.get("birdnet", {})
        latent = (r.get("latent_species") or {}).get("generated", {})
        rows.append([name, r["n_clips"], with_interval(knn), with_interval(latent), *fidelity_cells(r.get("fidelity")),
                     bird.get("macro_ap"),
                     bird.get("n_species_ap"), bird.get("top1"), bird.get("top5"), bird.get("detection_rate"),
                     bn.get("fad"), f"{bn['n_a']} / {bn['n_b']}" if bn else None, lm.get("fad"),
                     f"{lm['n_a']} / {lm['n_b']}" if lm else None])
    parts += ["## Summary", "", _table(header, rows), ""]
    probes = [(name, r["latent_species"]) for name, r in results.items() if r.get("latent_species")]
    if probes:
        parts += ["Latent top-1: the generated DiffGen latents, before decoding, classified by a linear probe on "
                  "pooled latent statistics fitted on real training recordings' DiffAE latents (text adherence "
                  "where the text acts). The same probe on the real recordings the prompts came from: "
                  + "; ".join(f"{name}: {with_interval(p.get('real', {}))}" for name, p in probes) + ".", ""]
    if any(r.get("fidelity") for r in results.values()):
        parts += [FIDELITY_CAPTION, ""]
    parts.append("BirdNET metrics compare each clip with the species it was prompted with (real clips: recorded "
                 "as); only species BirdNET knows count. kNN: a k-nearest-neighbour classifier on BirdNET "
                 "embeddings fitted on the reference clips. FAD: Fréchet distance to the real test clips "
                 "(log-mel: every frame is a vector; BirdNET: one embedding per clip; with fewer vectors than "
                 "dimensions the covariance is singular, so compare only figures with equal N).")
    parts.append("")
    if with_birdnet:
        cov = results.get(test.name, results["generated"])["birdnet"]["coverage"]
        parts += ["## BirdNET coverage of the test species", "",
                  _table(["test species", "known to BirdNET", "fraction", "test clips", "clips of known species"],
                         [[cov["species"], cov["species_known"], cov["species_fraction"], cov["clips"],
                           cov["clips_known"]]]), ""]
        if cov["unknown"]:
            shown = ", ".join(cov["unknown"][:20]) + (" …" if len(cov["unknown"]) > 20 else "")
            parts += [f"Not in BirdNET's labels: {shown}", ""]
    species_rows = []
    gen_bird = results["generated"].get("birdnet", {}).get("per_species", {})
    gen_knn = results["generated"].get("knn", {}).get("per_species", {})
    test_knn = results.get(test.name, {}).get("knn", {}).get("per_species", {})
    gen_rhythm = (results["generated"].get("fidelity") or {}).get("rhythm", {}).get("per_species", {})
    counts = Counter(gen.species)
    for species in sorted(counts):
        b, beat = gen_bird.get(species, {}), gen_rhythm.get(species, {})
        species_rows.append([species, counts[species], b.get("known"), b.get("ap"), b.get("top1"),
                             gen_knn.get(species, {}).get("accuracy"), test_knn.get(species, {}).get("accuracy"),
                             _pair(beat.get("rate"), beat.get("real_rate")),
                             _pair(beat.get("syllable_s"), beat.get("real_syllable_s")),
                             _pair(beat.get("gap_s"), beat.get("real_gap_s"))])
    parts += ["## Per species (generated clips)", "",
              _table(["species", "N", "BirdNET knows", "AP", "BirdNET top-1", "kNN top-1", "kNN top-1 on real test",
                      "syllables/s (real)", "syllable s (real)", "gap s (real)"], species_rows), ""]
    if sweep:
        sweep_rows = [[r["setting"], f"{float(r['cfg_scale']):g}", r["steps"], r["sampler"], r["n_clips"],
                       r.get("macro_ap"), r.get("top1"), r.get("knn_top1"), r.get("fad_logmel"), r.get("fad_birdnet")]
                      for r in sweep.get("rows", [])]
        parts += ["## Sweep", "", _table(["setting", "CFG", "steps", "sampler", "N clips", "macro AP", "top-1",
                                          "kNN top-1", "FAD log-mel", "FAD BirdNET"], sweep_rows), ""]
    for key, title in (("sweep", "Metrics vs CFG scale"), ("per_species", "Per-species accuracy"),
                       ("confusion", "kNN confusion matrix (generated clips)"),
                       ("spectrograms", "Real (left) vs generated (right)")):
        if images.get(key) is not None:
            parts += [f"## {title}", "", f"![{title}]({Path(images[key]).name})", ""]
    return "\n".join(parts)


def write_learning_curve(rows: Sequence[Mapping[str, Any]], out_dir: PathLike, columns: Sequence[str],
                         title: str, caption: str, **plot: Any) -> str:
    """Write learning_curve.csv (`columns` of `rows`) and .png (`plot_learning_curve(**plot)`) into `out_dir`;
    return the report section (markdown) showing them under `title` with `caption`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "learning_curve.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    plot_learning_curve(rows, out / "learning_curve.png", **plot)
    table = _table(list(columns), [[r.get(c) for c in columns] for r in rows])
    return f"\n## {title}\n\n{caption}\n\n{table}\n\n![{title}](learning_curve.png)\n"
