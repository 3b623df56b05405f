"""A k-nearest-neighbour species classifier on BirdNET embeddings, fitted on real reference clips and applied
to generated ones: it works for species BirdNET's own labels do not cover (e.g. the synthetic species)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from main.analysis.metrics import group_indices


@dataclass
class KnnResult:
    """Accuracy of kNN species predictions on query clips, per species and as a confusion matrix."""

    accuracy: float
    n_reference: int
    n_query: int
    k: int
    metric: str
    species: list[str]
    confusion: np.ndarray  # [len(species), len(species)]: rows = true species, columns = predicted
    predictions: list[str] = field(default_factory=list)
    per_species: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self, with_predictions: bool = False) -> dict[str, Any]:
        """JSON-serialisable summary."""
        from main.analysis.latent_species import wilson_interval

        out = {"accuracy": self.accuracy,
               "ci95": list(wilson_interval(round(self.accuracy * self.n_query), self.n_query)),
               "n_reference": self.n_reference, "n_query": self.n_query, "k": self.k, "metric": self.metric,
               "species": self.species, "confusion": self.confusion.tolist(), "per_species": self.per_species}
        if with_predictions:
            out["predictions"] = self.predictions
        return out


def knn_classify(
    reference_embeddings: np.ndarray,
    reference_species: Sequence[str],
    query_embeddings: np.ndarray,
    query_species: Sequence[str],
    k: int = 5,
    metric: str = "cosine",
) -> KnnResult:
    """Fit sklearn's KNeighborsClassifier on the reference embeddings and score it on the query clips."""
    from sklearn.neighbors import KNeighborsClassifier

    reference_embeddings = np.asarray(reference_embeddings, dtype=np.float64)
    query_embeddings = np.asarray(query_embeddings, dtype=np.float64)
    if len(reference_embeddings) != len(reference_species) or len(query_embeddings) != len(query_species):
        raise ValueError("embeddings and species lists differ in length")
    if len(reference_embeddings) == 0 or len(query_embeddings) == 0:
        raise ValueError("kNN needs at least one reference and one query clip")
    k_used = max(1, min(k, len(reference_embeddings)))
    classifier = KNeighborsClassifier(n_neighbors=k_used, metric=metric)
    classifier.fit(reference_embeddings, list(reference_species))
    predictions = [str(p) for p in classifier.predict(query_embeddings)]
    truth = [str(s) for s in query_species]
    species = sorted(set(reference_species) | set(truth))
    index = {s: i for i, s in enumerate(species)}
    confusion = np.zeros((len(species), len(species)), dtype=np.int64)
    for t, p in zip(truth, predictions):
        confusion[index[t], index[p]] += 1
    correct = np.array([t == p for t, p in zip(truth, predictions)])
    reference_set = set(reference_species)
    per_species = {name: {"n": len(rows), "accuracy": float(correct[rows].mean()),
                          "in_reference": name in reference_set}
                   for name, rows in sorted(group_indices(truth).items())}
    return KnnResult(float(correct.mean()), len(reference_embeddings), len(query_embeddings), k_used, metric,
                     species, confusion, predictions, per_species)
