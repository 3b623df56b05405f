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

from main.analysis.clips import ClipSet, clips_from_folder, clips_from_manifest, load_audio, read_clip_rows
from main.analysis.evaluate import evaluate_sets, write_json
from main.files import PathLike

REPORT_FILE = "report.md"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, (float, np.floating)):
        return "–" if not np.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_sweep(sweep: Mapping[str, Any], path: PathLike) -> Optional[Path]:
    """Macro AP, BirdNET top-1 and kNN top-1 vs CFG scale, one line per (steps, sampler); None without rows."""
    rows = sweep.get("rows") or []
    if not rows:
        return None
    plt = _pyplot()
    metrics = [("macro_ap", "BirdNET macro AP"), ("top1", "BirdNET top-1"), ("knn_top1", "kNN top-1 (BirdNET emb.)"),
               ("fad_logmel", "log-mel FAD")]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), dpi=100)
    groups = sorted({(int(r["steps"]), str(r["sampler"])) for r in rows})
    for ax, (key, title) in zip(axes, metrics):
        for steps, sampler in groups:
            points = sorted((float(r["cfg_scale"]), r.get(key)) for r in rows
                            if int(r["steps"]) == steps and str(r["sampler"]) == sampler)
            xs = [x for x, y in points if y is not None and str(y) != ""]
            ys = [float(y) for x, y in points if y is not None and str(y) != ""]
            if xs:
                ax.plot(xs, ys, marker="o", label=f"{steps} steps, {sampler}")
        if key != "fad_logmel":
            ax.set_ylim(0.0, 1.05)
        else:
            ax.ticklabel_format(axis="y", useOffset=False)
        if not ax.lines:
            ax.text(0.5, 0.5, "no values\n(species unknown to BirdNET?)", ha="center", va="center", fontsize=8,
                    transform=ax.transAxes)
        ax.set_xlabel("CFG scale")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    n = rows[0].get("n_clips")
    fig.suptitle(f"sweep ({n} clips per setting)", fontsize=10)
    labelled = [ax for ax in axes if ax.get_legend_handles_labels()[0]]
    if labelled:
        labelled[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_per_species(results: Mapping[str, Mapping[str, Any]], path: PathLike) -> Optional[Path]:
    """Per-species accuracy bars (kNN top-1 where available, else BirdNET top-1) for each evaluated set."""
    series: dict[str, dict[str, float]] = {}
    metric = "kNN top-1" if any("knn" in r for r in results.values()) else "BirdNET top-1"
    for name, result in results.items():
        if metric.startswith("kNN") and "knn" in result:
            values = {s: e["accuracy"] for s, e in result["knn"]["per_species"].items()}
        elif metric.startswith("BirdNET") and "birdnet" in result:
            values = {s: e["top1"] for s, e in result["birdnet"]["per_species"].items() if e.get("known")}
        else:
            continue
        if values:
            series[f"{name} (N={result['n_clips']})"] = values
    if not series:
        return None
    species = sorted({s for values in series.values() for s in values})
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(species) * len(series) + 2), 4), dpi=100)
    width = 0.8 / len(series)
    x = np.arange(len(species))
    for i, (name, values) in enumerate(series.items()):
        ax.bar(x + i * width - 0.4 + width / 2, [values.get(s, np.nan) for s in species], width, label=name)
    ax.set_xticks(x, species, rotation=45, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.set_title(f"per-species {metric}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_confusion(knn: Mapping[str, Any], path: PathLike, title: str) -> Path:
    """The kNN confusion matrix (rows: prompted species, columns: predicted), row-normalised."""
    plt = _pyplot()
    matrix = np.asarray(knn["confusion"], dtype=float)
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    species = knn["species"]
    size = max(4.0, 0.35 * len(species) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(species)), species, rotation=90, fontsize=6)
    ax.set_yticks(range(len(species)), species, fontsize=6)
    ax.set_xlabel("predicted (kNN)")
    ax.set_ylabel("prompted")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_spectrogram_grid(pairs: Sequence[tuple[str, Optional[str], str]], path: PathLike,
                          sample_rate: Optional[int] = None, max_seconds: float = 10.0) -> Path:
    """Rows of (species, real file or None, generated file): spectrograms side by side, real left; each file
    at its own rate unless `sample_rate` is given (resampling up would draw the resampler's images above the
    original Nyquist frequency)."""
    import torch

    from main.audio import log_spectrogram

    plt = _pyplot()
    fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 2.2 * len(pairs)), dpi=100, squeeze=False)
    for row, (species, real, generated) in enumerate(pairs):
        for col, (kind, file) in enumerate((("real", real), ("generated", generated))):
            ax = axes[row][col]
            if file is None:
                ax.axis("off")
                ax.set_title(f"{kind}: none for {species}", fontsize=8)
                continue
            audio, rate = load_audio(file, sample_rate)
            audio = audio[: int(max_seconds * rate)]
            spec = log_spectrogram(torch.from_numpy(audio)[None]).numpy()
            ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=float(spec.max()) - 80,
                      extent=(0.0, len(audio) / rate, 0.0, rate / 2000))
            ax.set_title(f"{kind}: {species} ({Path(file).name})", fontsize=8)
            ax.set_ylabel("kHz", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[-1][0].set_xlabel("time (s)")
    axes[-1][1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


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


def timing_text(timing: Optional[Mapping[str, Any]]) -> Optional[str]:
    """'syllables / gaps' log2 distances of a latent timing result (None without one; '–' where no syllable or
    gap had neighbours on both sides, stored as null)."""
    if not timing:
        return None
    return " / ".join("–" if v is None or v != v else f"{v:.2f}"
                      for v in (timing.get("syllable_distance"), timing.get("gap_distance")))


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
    results = evaluate_sets(sets, test, reference, birdnet, threshold, k, logmel, show_progress)
    for name, folder in folders.items():
        probe = folder / "latent_species.json"
        if probe.is_file():
            results[name]["latent_species"] = json.loads(probe.read_text())
    if reference is not None:
        # The real reference set: how far real recordings are from each other (the floor of the distances).
        results.update(evaluate_sets({reference.name: reference}, test, None, birdnet, threshold, k, logmel,
                                     show_progress))
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


def _markdown(results: Mapping[str, Mapping[str, Any]], gen: ClipSet, test: ClipSet, reference: Optional[ClipSet],
              sweep: Optional[Mapping[str, Any]], images: Mapping[str, Optional[Path]], threshold: float, k: int,
              with_birdnet: bool) -> str:
    parts = ["# Generated bird sounds: evaluation report", ""]
    parts.append(f"Generated clips: **{len(gen)}** ({len(set(gen.species))} species). Compared with {test.name}: "
                 f"**{len(test)}** clips ({len(set(test.species))} species)."
                 + (f" kNN reference ({reference.name}): **{len(reference)}** clips." if reference else ""))
    parts.append("")
    header = ["set", "N clips", f"kNN top-1 (k={k}) [95% CI]", "latent top-1 [95% CI]",
              "latent timing (syllables / gaps)", "macro AP",
              "N species (AP)", "top-1", "top-5", f"detected @ {threshold:g}", "FAD BirdNET", "N clips (set / test)",
              "FAD log-mel", "N frames (set / test)"]
    rows = []
    for name, r in results.items():
        bird, knn, fad = r.get("birdnet", {}), r.get("knn", {}), r.get("fad", {})
        lm, bn = fad.get("logmel", {}), fad.get("birdnet", {})
        latent = (r.get("latent_species") or {}).get("generated", {})
        timing = (r.get("latent_species") or {}).get("timing")
        timing_cell = timing_text(timing)
        rows.append([name, r["n_clips"], with_interval(knn), with_interval(latent), timing_cell,
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
                  + "; ".join(f"{name}: {with_interval(p.get('real', {}))}" for name, p in probes) + ". Latent "
                  "timing: how far the durations of the generated latents' syllables and gaps are from the real "
                  "training recordings' (log2 Wasserstein distance, mean over species: 0 = the same, 1 = off by a "
                  "factor of 2 on average; main/analysis/latent_timing.py), which the probe does not see; the "
                  "real recordings the prompts came from: "
                  + "; ".join(f"{name}: {timing_text(p.get('timing_real'))}" for name, p in probes) + ".", ""]
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
    counts = Counter(gen.species)
    for species in sorted(counts):
        b = gen_bird.get(species, {})
        species_rows.append([species, counts[species], b.get("known"), b.get("ap"), b.get("top1"),
                             gen_knn.get(species, {}).get("accuracy"), test_knn.get(species, {}).get("accuracy")])
    parts += ["## Per species (generated clips)", "",
              _table(["species", "N", "BirdNET knows", "AP", "BirdNET top-1", "kNN top-1", "kNN top-1 on real test"],
                     species_rows), ""]
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


def plot_learning_curve(rows: Sequence[Mapping[str, Any]], path: PathLike, x: str = "step", y: str = "accuracy",
                        xlabel: str = "training steps", ylabel: str = "species top-1",
                        chance: Optional[float] = None) -> Path:
    """Accuracy (`y`) against training progress (`x`), one line per `rows[i]["clips"]` kind (dotted for kinds
    starting with 'real': ceilings), with the chance level."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4), dpi=100)
    for kind in dict.fromkeys(r["clips"] for r in rows):
        points = sorted((float(r[x]), float(r[y])) for r in rows if r["clips"] == kind and r.get(y) is not None)
        if points:
            ax.plot([p for p, _ in points], [q for _, q in points], ":" if str(kind).startswith("real") else "-",
                    marker="o", label=kind)
    if chance:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=0.8, label="chance")
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


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
