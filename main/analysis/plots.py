"""The report's plots: metrics vs CFG scale, per-species accuracy, the kNN confusion matrix, spectrogram grids
and learning curves (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from main.analysis.clips import load_audio
from main.files import PathLike


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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
