"""Evaluate clip sets together: BirdNET species metrics, kNN species accuracy and Fréchet distances to the real
test clips, running BirdNET once over every file involved."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from main.analysis.clips import ClipSet
from main.files import PathLike, write_text_atomic



def jsonable(value: Any) -> Any:
    """Nested data with numpy types turned into Python ones and NaN/inf into None (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: PathLike, data: Any) -> Path:
    """Write strict JSON (NaN as null) atomically."""
    return write_text_atomic(path, json.dumps(jsonable(data), indent=2, allow_nan=False) + "\n")


def evaluate_sets(
    sets: Mapping[str, ClipSet],
    test: ClipSet,
    reference: Optional[ClipSet] = None,
    birdnet: Optional[Any] = None,
    threshold: float = 0.25,
    k: int = 5,
    logmel: bool = True,
    show_progress: bool = True,
    fidelity_reference: Optional[ClipSet] = None,
    features: Optional[Any] = None,
) -> dict[str, dict[str, Any]]:
    """Metrics of each clip set against the species it was prompted with (test species = those of `test`).

    - `birdnet` (a `BirdNet`, or None to skip): macro AP, top-1/5, detection rate, coverage; with `reference`
      also a kNN classifier on BirdNET embeddings fitted on the reference clips; and the BirdNET-embedding FAD.
    - `logmel`: the log-mel FAD. Distances are to the real `test` clips (none for a set made of the same files).
    - fidelity (`main.analysis.fidelity`) against `fidelity_reference` (default `reference`) real clips:
      the BirdNET FAD over its real-vs-real floor, clipping, noise floor and rhythm. `features`: a shared
      `FeatureCache` (so that the reference clips are read once across calls).
    """
    from main.analysis.fad import LogMelEmbedder, fad_from_embeddings, fad_from_stats
    from main.analysis.fidelity import FeatureCache, fad_ratio, fidelity
    from main.analysis.knn import knn_classify
    from main.analysis.metrics import species_metrics

    test_species = sorted(set(test.species))
    fidelity_reference = fidelity_reference or reference
    features = features or FeatureCache()
    scores = None
    if birdnet is not None:
        everything = [p for s in (*sets.values(), test, *([reference] if reference else []),
                                  *([fidelity_reference] if fidelity_reference else [])) for p in s.paths]
        scores = birdnet.score(list(dict.fromkeys(everything)))
    embedder = LogMelEmbedder() if logmel else None
    test_logmel = embedder.stats(test.paths, desc="log-mel (test)", show_progress=show_progress) if embedder else None
    test_birdnet = scores.select(test.paths) if scores is not None else None
    ref_birdnet = scores.select(reference.paths) if scores is not None and reference is not None else None
    results: dict[str, dict[str, Any]] = {}
    for name, clips in sets.items():
        entry: dict[str, Any] = {"n_clips": len(clips), "n_species": len(set(clips.species))}
        same_as_test = sorted(clips.paths) == sorted(test.paths)
        if scores is not None:
            own = scores.select(clips.paths)
            entry["birdnet"] = species_metrics(own.confidences, clips.species, own.sci_names, test_species, threshold)
            entry["birdnet"]["mean_chunks"] = float(own.chunks.mean()) if len(own.chunks) else float("nan")
            if reference is not None and ref_birdnet is not None:
                entry["knn"] = knn_classify(ref_birdnet.embeddings, reference.species, own.embeddings,
                                            clips.species, k=k).to_dict()
        fad: dict[str, Any] = {}
        if not same_as_test:
            if embedder is not None and test_logmel is not None:
                fad["logmel"] = fad_from_stats(embedder.stats(clips.paths, desc=f"log-mel ({name})",
                                                              show_progress=show_progress), test_logmel)
            if scores is not None and test_birdnet is not None and len(clips) > 1 and len(test) > 1:
                fad["birdnet"] = fad_from_embeddings(scores.select(clips.paths).embeddings, test_birdnet.embeddings)
        entry["fad"] = fad
        if fidelity_reference is not None:
            ratio = None
            if "birdnet" in fad and test_birdnet is not None:
                real = scores.select(fidelity_reference.paths)
                ratio = fad_ratio(scores.select(clips.paths).embeddings, clips.species, real.embeddings,
                                  fidelity_reference.species, test_birdnet.embeddings)
            entry["fidelity"] = fidelity(features(clips.paths), clips.species, features(fidelity_reference.paths),
                                         fidelity_reference.species, ratio)
        results[name] = entry
    return results


def summary_row(result: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of one `evaluate_sets` entry as a flat row (for CSV tables)."""
    bird = result.get("birdnet", {})
    knn = result.get("knn", {})
    fad = result.get("fad", {})
    return {
        "n_clips": result.get("n_clips"),
        "macro_ap": bird.get("macro_ap"),
        "n_species_ap": bird.get("n_species_ap"),
        "n_clips_known": bird.get("n_clips_known"),
        "top1": bird.get("top1"),
        "top5": bird.get("top5"),
        "detection_rate": bird.get("detection_rate"),
        "knn_top1": knn.get("accuracy"),
        "n_knn_reference": knn.get("n_reference"),
        "fad_logmel": fad.get("logmel", {}).get("fad"),
        "n_fad_logmel_frames": fad.get("logmel", {}).get("n_a"),
        "n_fad_logmel_test_frames": fad.get("logmel", {}).get("n_b"),
        "fad_birdnet": fad.get("birdnet", {}).get("fad"),
        "n_fad_birdnet": fad.get("birdnet", {}).get("n_a"),
        "n_fad_birdnet_test": fad.get("birdnet", {}).get("n_b"),
    }
