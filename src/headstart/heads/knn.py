"""k-nearest-neighbour head on L2-normalised embeddings (cosine similarity).

Needs no training beyond storing the normalised embeddings, so it is the quickest way to see how
well a backbone separates the classes, and it works with one or two images per class.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from headstart import errors
from headstart.heads._base import (
    FloatArray,
    Head,
    encode_labels,
    validate_predict_input,
    validate_training_data,
)

__all__ = ["KNNHead"]

#: Query rows are processed in blocks so the similarity matrix stays near this many entries.
_BLOCK_ENTRIES = 1 << 22
#: Added to cosine distances before inverting them, so an exact match gets a large finite weight.
_EPS = 1e-6


def l2_normalise(X: FloatArray) -> FloatArray:
    """Rows scaled to unit length; all-zero rows stay zero."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    out: FloatArray = (X / np.where(norms > 0, norms, 1.0)).astype(X.dtype, copy=False)
    return out


class KNNHead(Head):
    """Vote of the ``n_neighbors`` most cosine-similar training embeddings.

    Parameters
    ----------
    n_neighbors:
        Neighbours consulted per query (capped at the number of training samples).
    weights:
        ``"distance"`` weights each neighbour by ``1 / (cosine distance + 1e-6)``;
        ``"uniform"`` gives each the same vote.
    """

    kind: ClassVar[str] = "knn"
    _array_attrs: ClassVar[tuple[str, ...]] = ("embeddings", "labels")

    def __init__(
        self, n_neighbors: int = 10, weights: Literal["distance", "uniform"] = "distance"
    ) -> None:
        self.n_neighbors = n_neighbors
        self.weights = weights

    def fit(self, X: Any, y: Any) -> KNNHead:
        """Store the normalised embeddings ``X`` and their labels ``y``; returns ``self``."""
        if not isinstance(self.n_neighbors, int | np.integer) or self.n_neighbors < 1:
            raise errors.ConfigError(
                f"n_neighbors must be an integer >= 1; got {self.n_neighbors!r}"
            )
        if self.weights not in ("distance", "uniform"):
            raise errors.ConfigError(
                f"weights must be 'distance' or 'uniform'; got {self.weights!r}"
            )
        X_arr, y_arr = validate_training_data(self, X, y)
        self.classes_, self.labels_ = encode_labels(y_arr)
        self.embeddings_ = l2_normalise(X_arr)
        return self

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Weighted share of each class among the neighbours; columns follow ``classes_``."""
        X_arr = l2_normalise(validate_predict_input(self, X))
        n_train = self.embeddings_.shape[0]
        k = min(int(self.n_neighbors), n_train)
        n_classes = len(self.classes_)
        proba = np.zeros((X_arr.shape[0], n_classes))
        block = max(1, _BLOCK_ENTRIES // n_train)
        for start in range(0, X_arr.shape[0], block):
            queries = X_arr[start : start + block]
            proba[start : start + block] = self._block_proba(queries, k, n_classes)
        return proba

    def _block_proba(self, queries: FloatArray, k: int, n_classes: int) -> NDArray[np.float64]:
        similarity = queries @ self.embeddings_.T
        if k < similarity.shape[1]:
            nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        else:
            nearest = np.broadcast_to(np.arange(k), (similarity.shape[0], k))
        rows = np.arange(similarity.shape[0])[:, None]
        if self.weights == "distance":
            distance = np.clip(1.0 - similarity[rows, nearest].astype(np.float64), 0.0, 2.0)
            weight = 1.0 / (distance + _EPS)
        else:
            weight = np.ones(nearest.shape)
        labels = np.asarray(self.labels_)[nearest]
        flat = (rows * n_classes + labels).ravel()
        votes = np.bincount(flat, weights=weight.ravel(), minlength=len(rows) * n_classes)
        votes = votes.reshape(len(rows), n_classes)
        proba: NDArray[np.float64] = votes / votes.sum(axis=1, keepdims=True)
        return proba
