"""Evaluation of generated bird sounds: generation from manifest labels, DiffAE reconstructions, BirdNET
species metrics, kNN on BirdNET embeddings, Fréchet distances, CFG sweeps and a Markdown report.

    python -m main.analysis {generate,reconstruct,evaluate,sweep,report} --help

Modules load lazily (torch, the models and BirdNET are imported only when used).
"""

from __future__ import annotations

from main.lazy import lazy_getattr

_EXPORTS: dict[str, str] = {
    "ClipSet": "clips",
    "clips_from_folder": "clips",
    "clips_from_manifest": "clips",
    "BirdNet": "birdnet",
    "BirdNetScores": "birdnet",
    "BirdNetUnavailable": "birdnet",
    "birdnet_available": "birdnet",
    "species_metrics": "metrics",
    "macro_average_precision": "metrics",
    "knn_classify": "knn",
    "KnnResult": "knn",
    "frechet_distance": "fad",
    "fad_from_embeddings": "fad",
    "logmel_fad": "fad",
    "LogMelEmbedder": "fad",
    "generate_clips": "generate",
    "generate_from_manifest": "generate",
    "reconstruct_clips": "generate",
    "reconstruct_from_manifest": "generate",
    "load_sampler": "generate",
    "evaluate_sets": "evaluate",
    "run_sweep": "sweep",
    "write_report": "report",
}
__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
