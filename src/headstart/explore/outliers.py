"""How unusual each image is: three detectors, each rank-normalised; ``score`` is the kNN one.

- kNN distance: the mean cosine distance to the 50 nearest neighbours.  This is ``score``:
  strays rarely come alone (a folder of insect photos dropped among clothes), and a group of
  them shelters itself from any detector that looks only at a few neighbours.  Measured on
  selection data (hymenoptera with 30 clothing photos planted): in the top 50, kNN distance
  found 22/30 with k=10, 25 with k=20 and 30 with k=50 or 100; local outlier factor 3-4 at any
  k (the planted group is locally dense); isolation forest 14; the mean of the three ranks 4.
  So the mean is not the score; the other two detectors stay in the CSV as second opinions.
- Isolation forest, on the PCA-50 projection of the normalised embeddings *before* it is
  normalised again (normalising hides how far off the main directions an image lies: on the
  tiny demo photos with a cat, a rocket and a coffee cup planted, their isolation ranks were
  0.74-0.89 on the re-normalised projection and 0.97-0.99 on the plain one);
- local outlier factor, from the precomputed k-nearest-neighbour graph (no second search).

Each raw score becomes its rank in [0, 1] (1 = most unusual).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DETECTORS", "OutlierScores", "outlier_scores", "rank_normalise"]

DETECTORS = ("isolation_forest", "lof", "knn")
_KNN = 50  # neighbours averaged for the kNN distance (see the module docstring)
_LOF = 20  # LOF's neighbourhood (sklearn's default)


@dataclass(frozen=True)
class OutlierScores:
    """Per row: the combined ``score`` and each detector's rank score, all in [0, 1]."""

    score: np.ndarray
    detectors: dict[str, np.ndarray]


def rank_normalise(values: np.ndarray) -> np.ndarray:
    """Each value's rank scaled to [0, 1] (ties share their mean rank); one row -> 0.5."""
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return np.full(len(values), 0.5)
    return np.asarray((rankdata(values) - 1.0) / (len(values) - 1.0), dtype=np.float64)


def outlier_scores(
    z: np.ndarray, indices: np.ndarray, distances: np.ndarray, *, seed: int = 0
) -> OutlierScores:
    """Scores from the reduced embeddings ``z`` (isolation forest) and every row's nearest
    neighbours (``indices``/``distances`` from :func:`headstart.features.neighbours.knn`,
    nearest first; LOF uses up to 20 of them, the kNN distance the first 50)."""
    n = len(z)
    if n < 3 or indices.shape[1] == 0:
        flat = np.full(n, 0.5)
        return OutlierScores(flat, dict.fromkeys(DETECTORS, flat))
    raw = {
        "isolation_forest": _isolation(z, seed),
        "lof": _lof(indices, distances),
        "knn": distances[:, :_KNN].mean(axis=1),
    }
    detectors = {name: rank_normalise(raw[name]) for name in DETECTORS}
    return OutlierScores(detectors["knn"], detectors)


def _isolation(z: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.ensemble import IsolationForest

    forest = IsolationForest(random_state=seed).fit(z)
    return np.asarray(-forest.score_samples(z), dtype=np.float64)  # higher = more anomalous


def _lof(indices: np.ndarray, distances: np.ndarray) -> np.ndarray:
    """LOF from the precomputed neighbour graph (sklearn's ``metric="precomputed"`` on a
    sparse distance matrix): the same definition, no new search."""
    from scipy.sparse import csr_matrix
    from sklearn.neighbors import LocalOutlierFactor

    n, k = indices.shape[0], min(_LOF, indices.shape[1])
    # sklearn looks up k + 1 neighbours of the training rows and drops each row itself, so the
    # graph holds the row at distance 0 first; a tiny floor on the others keeps an exact copy
    # (distance 0) after it and the reachability densities finite.
    own = np.arange(n)[:, None]
    columns = np.hstack([own, indices[:, :k]]).ravel()
    values = np.hstack([np.zeros((n, 1)), np.maximum(distances[:, :k], 1e-9)]).ravel()
    graph = csr_matrix((values, columns, np.arange(0, n * (k + 1) + 1, k + 1)), shape=(n, n))
    lof = LocalOutlierFactor(n_neighbors=k, metric="precomputed").fit(graph)
    return np.asarray(-lof.negative_outlier_factor_, dtype=np.float64)
