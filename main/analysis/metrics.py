"""Species metrics of BirdNET confidences against the species each clip was prompted with (or recorded as).

Macro average precision, as the seed computed it: for each test species s that BirdNET knows,
y_true = (clip's species == s), score = BirdNET's confidence for s, sklearn's `average_precision_score`;
the macro AP is the mean over those species. Only clips of species BirdNET knows take part (a clip of an
unknown species can be no species' positive). Top-1 / top-5: the prompted species is BirdNET's best / among
its five best labels (all 6522). Detection rate: the prompted species' confidence reaches the threshold.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from main.analysis.birdnet import normalize_name, species_columns


def group_indices(labels: Sequence[str]) -> dict[str, np.ndarray]:
    """Label -> indices of the items carrying it."""
    groups: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        groups.setdefault(str(label), []).append(i)
    return {label: np.array(rows, dtype=np.int64) for label, rows in groups.items()}


def coverage(species: Sequence[str], known_sci_names: Sequence[str]) -> dict[str, Any]:
    """How many of the distinct `species` (and of the clips) BirdNET's labels cover."""
    known = {normalize_name(s) for s in known_sci_names}
    distinct = sorted({str(s) for s in species})
    covered = [s for s in distinct if normalize_name(s) in known]
    clips = sum(normalize_name(s) in known for s in species)
    return {
        "species": len(distinct),
        "species_known": len(covered),
        "species_fraction": len(covered) / len(distinct) if distinct else float("nan"),
        "clips": len(species),
        "clips_known": int(clips),
        "clips_fraction": clips / len(species) if len(species) else float("nan"),
        "unknown": [s for s in distinct if normalize_name(s) not in known],
    }


def macro_average_precision(
    confidences: np.ndarray, species: Sequence[str], sci_names: Sequence[str],
    test_species: Optional[Sequence[str]] = None,
) -> tuple[float, dict[str, float]]:
    """Macro AP over the species of `test_species` (default: those of the clips) that BirdNET knows and that
    have at least one clip; returns the mean and the per-species AP (NaN mean when no species qualifies)."""
    from sklearn.metrics import average_precision_score

    columns = species_columns(sci_names)
    candidates = sorted({str(s) for s in (test_species if test_species is not None else species)})
    known = {normalize_name(s): s for s in candidates if normalize_name(s) in columns}
    clip_names = np.array([normalize_name(s) for s in species], dtype=object)
    keep = np.array([name in known for name in clip_names], dtype=bool)
    clip_names, scores = clip_names[keep], np.asarray(confidences)[keep]
    per_species: dict[str, float] = {}
    for name in sorted(set(clip_names.tolist())):
        y_true = clip_names == name
        per_species[known[name]] = float(average_precision_score(y_true, scores[:, columns[name]]))
    value = float(np.mean(list(per_species.values()))) if per_species else float("nan")
    return value, per_species


def prompted_ranks(confidences: np.ndarray, species: Sequence[str], sci_names: Sequence[str]) -> np.ndarray:
    """Rank (0 = best) of each clip's species among BirdNET's labels; -1 where BirdNET does not know it.

    Ties count against the clip (silence, where every label sits at the clipped floor, ranks last, not first).
    """
    columns = species_columns(sci_names)
    ranks = np.full(len(species), -1, dtype=np.int64)
    for i, name in enumerate(species):
        column = columns.get(normalize_name(name))
        if column is not None:
            row = np.asarray(confidences[i])
            ranks[i] = int((row >= row[column]).sum()) - 1
    return ranks


def species_metrics(
    confidences: np.ndarray, species: Sequence[str], sci_names: Sequence[str],
    test_species: Optional[Sequence[str]] = None, threshold: float = 0.25,
) -> dict[str, Any]:
    """Macro AP, top-1/top-5 accuracy, detection rate at `threshold`, coverage, and the same per species."""
    confidences = np.asarray(confidences)
    test_species = list(test_species) if test_species is not None else sorted(set(species))
    columns = species_columns(sci_names)
    ap, per_species_ap = macro_average_precision(confidences, species, sci_names, test_species)
    ranks = prompted_ranks(confidences, species, sci_names)
    known = ranks >= 0
    prompted_conf = np.array([confidences[i, columns[normalize_name(s)]] if known[i] else np.nan
                              for i, s in enumerate(species)])
    ap_by_name = {normalize_name(k): v for k, v in per_species_ap.items()}
    per_species: dict[str, dict[str, Any]] = {}
    for name, rows in sorted(group_indices(species).items()):
        entry: dict[str, Any] = {"n": len(rows), "known": bool(known[rows].all())}
        if entry["known"]:
            entry.update(top1=float((ranks[rows] == 0).mean()), top5=float((ranks[rows] < 5).mean()),
                         detection=float((prompted_conf[rows] >= threshold).mean()),
                         ap=ap_by_name.get(normalize_name(name)))
        per_species[name] = entry
    n_known = int(known.sum())
    return {
        "n_clips": len(species),
        "n_clips_known": n_known,
        "n_species_ap": len(per_species_ap),
        "macro_ap": ap,
        "top1": float((ranks[known] == 0).mean()) if n_known else float("nan"),
        "top5": float((ranks[known] < 5).mean()) if n_known else float("nan"),
        "detection_rate": float((prompted_conf[known] >= threshold).mean()) if n_known else float("nan"),
        "threshold": threshold,
        "mean_confidence": float(np.nanmean(prompted_conf)) if n_known else float("nan"),
        "coverage": {**coverage(test_species, sci_names),  # species: the test species; clips: these clips
                     "clips": len(species), "clips_known": n_known,
                     "clips_fraction": n_known / len(species) if len(species) else float("nan")},
        "per_species": per_species,
    }
