"""The fitted state shared by the tree heads (:mod:`headstart.heads.boosting`): every tree as
one flat "forest" of plain arrays (:data:`FOREST_ARRAYS`), its consistency check, and the
vectorised numpy walk that predicts with it exactly as the libraries do."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from headstart import errors
from headstart.heads._base import (
    FloatArray,
    Head,
    probabilities_from_scores,
    validate_predict_input,
)

__all__ = ["FOREST_ARRAYS", "ForestHead", "available_cores", "check_forest", "flat_forest"]

#: The exported arrays of a tree head: per node ``feature``, ``threshold``, ``left``, ``right``
#: (a leaf points to itself) and ``value`` (0 at internal nodes); per tree ``roots`` and
#: ``tree_class`` (the score column it adds to); ``baseline`` (one score per column: one
#: column for two classes, the positive class's logit, else one per class).
FOREST_ARRAYS: tuple[str, ...] = tuple(
    ["roots", "feature", "threshold", "left", "right", "value", "tree_class", "baseline"]
)
#: Rows are walked in blocks so the (rows, trees) node matrix stays near this many entries.
_BLOCK_ENTRIES = 1 << 21


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows: no affinity API
        return max(1, os.cpu_count() or 1)


class ForestHead(Head):
    """Prediction and export shared by the tree heads (state: :data:`FOREST_ARRAYS`)."""

    _array_attrs: ClassVar[tuple[str, ...]] = FOREST_ARRAYS

    roots_: NDArray[np.int64]
    feature_: NDArray[np.int64]
    threshold_: NDArray[np.float64]
    left_: NDArray[np.int64]
    right_: NDArray[np.int64]
    value_: NDArray[np.float64]
    tree_class_: NDArray[np.int64]
    baseline_: NDArray[np.float64]

    def decision_function(self, X: Any) -> FloatArray:
        """Raw boosted scores: (n,) for two classes (positive = ``classes_[1]``), else (n, k)."""
        X_arr = validate_predict_input(self, X)
        scores = self._raw(X_arr)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Class probabilities (sigmoid or softmax of the scores), columns follow ``classes_``."""
        return probabilities_from_scores(self.decision_function(X))

    def _raw(self, X: FloatArray) -> NDArray[np.float64]:
        n_trees = len(self.roots_)
        columns = np.zeros((n_trees, len(self.baseline_)))
        columns[np.arange(n_trees), self.tree_class_] = 1.0
        raw = np.empty((len(X), len(self.baseline_)))
        block = max(1, _BLOCK_ENTRIES // max(n_trees, 1))
        for start in range(0, len(X), block):
            leaves = self._leaves(X[start : start + block])
            raw[start : start + block] = self.value_[leaves] @ columns + self.baseline_
        return raw

    def _leaves(self, X: FloatArray) -> NDArray[np.int64]:
        """The leaf each row reaches in each tree, (rows, trees); leaves point to themselves,
        so walking every tree one level per step ends when no node moves."""
        nodes = np.tile(self.roots_, (len(X), 1))
        rows = np.arange(len(X))[:, None]
        while True:
            # float32 rows compare in float64, as both libraries do
            left = X[rows, self.feature_[nodes]] <= self.threshold_[nodes]
            moved = np.where(left, self.left_[nodes], self.right_[nodes])
            if np.array_equal(moved, nodes):
                return nodes
            nodes = moved

    def restore_state(self, arrays: Mapping[str, NDArray[Any]], extra: Mapping[str, Any]) -> None:
        """Set the forest from exported arrays, checking that it is a well-formed forest."""
        super().restore_state(arrays, extra)
        for name in ("roots", "feature", "left", "right", "tree_class"):
            setattr(self, name + "_", np.asarray(getattr(self, name + "_"), dtype=np.int64))
        check_forest(self, len(self.classes_))
        self.n_iter_ = int(extra.get("n_iter", 0))

    def export_extra(self) -> dict[str, Any]:
        """Boosting rounds run."""
        return {"n_iter": int(self.n_iter_)}

    def _set_forest(self, forest: Mapping[str, NDArray[Any]], n_iter: int) -> None:
        for name in FOREST_ARRAYS:
            setattr(self, name + "_", np.ascontiguousarray(forest[name]))
        self.n_iter_ = n_iter


def check_forest(head: Any, n_classes: int) -> None:
    """Raise :class:`~headstart.errors.BundleError` unless the head's forest arrays are
    consistent: lengths, indices in range, and children after their parent (so every walk
    ends; leaves point to themselves)."""
    n_nodes = len(head.feature_)
    same = all(len(getattr(head, n + "_")) == n_nodes for n in ("threshold", "value", "right"))
    columns = 1 if n_classes == 2 else n_classes
    index = np.arange(n_nodes)
    ok = (
        same
        and len(head.left_) == n_nodes
        and 0 < len(head.roots_) == len(head.tree_class_)
        and head.baseline_.shape == (columns,)
        and np.all((head.roots_ >= 0) & (head.roots_ < n_nodes))
        and np.all((head.tree_class_ >= 0) & (head.tree_class_ < columns))
        and np.all((head.feature_ >= 0) & (head.feature_ < head.n_features_in_))
    )
    if ok:
        leaf = head.left_ == index
        ok = bool(
            np.all(head.right_[leaf] == index[leaf])
            and np.all((head.left_[~leaf] > index[~leaf]) & (head.left_[~leaf] < n_nodes))
            and np.all((head.right_[~leaf] > index[~leaf]) & (head.right_[~leaf] < n_nodes))
        )
    if not ok:
        raise errors.BundleError(f"{head.kind} head state is not a consistent forest")


def flat_forest(trees: list[tuple[int, dict[str, NDArray[Any]]]], baseline: Any) -> dict[str, Any]:
    """One flat forest from per-tree node tables (local child indices; leaves: left == -1)."""
    parts: dict[str, list[NDArray[Any]]] = {k: [] for k in ("feature", "threshold", "value")}
    lefts, rights, roots = [], [], []
    offset = 0
    for _, nodes in trees:
        n = len(nodes["feature"])
        leaf = nodes["left"] < 0
        here = np.arange(offset, offset + n)
        lefts.append(np.where(leaf, here, nodes["left"] + offset))
        rights.append(np.where(leaf, here, nodes["right"] + offset))
        parts["feature"].append(np.where(leaf, 0, nodes["feature"]))
        parts["threshold"].append(np.where(leaf, 0.0, nodes["threshold"]))
        parts["value"].append(np.where(leaf, nodes["value"], 0.0))
        roots.append(offset)
        offset += n
    return {
        "roots": np.asarray(roots, dtype=np.int64),
        "feature": np.concatenate(parts["feature"]).astype(np.int64),
        "threshold": np.concatenate(parts["threshold"]).astype(np.float64),
        "left": np.concatenate(lefts).astype(np.int64),
        "right": np.concatenate(rights).astype(np.int64),
        "value": np.concatenate(parts["value"]).astype(np.float64),
        "tree_class": np.asarray([k for k, _ in trees], dtype=np.int64),
        "baseline": np.asarray(baseline, dtype=np.float64).reshape(-1),
    }
