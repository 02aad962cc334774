"""Tree heads (``hgb``, ``lightgbm``) as torch modules, by the GEMM strategy of Microsoft's
hummingbird: one gather-and-compare for every internal node of every tree, a batched matmul
with each tree's path matrix to find the leaf, leaf values summed per class.  Thresholds are
rounded down to float32, so ``x <= threshold`` decides exactly as the head does for float32
features (trees pass no gradient)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from headstart import errors
from headstart.heads.forest import FOREST_ARRAYS

__all__ = ["Forest", "as_tensor", "state_array", "tree_tables"]


def as_tensor(values: NDArray[Any]) -> Tensor:
    """A float32 tensor of ``values`` (contiguous)."""
    return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))


def state_array(arrays: Mapping[str, NDArray[Any]], name: str, kind: str) -> NDArray[Any]:
    """The exported array ``name`` of a ``kind`` head; ``BundleError`` when it is missing."""
    if name not in arrays:
        raise errors.BundleError(f"{kind} head state lacks array {name!r}")
    return np.asarray(arrays[name])


def _float32_at_most(threshold: NDArray[Any]) -> NDArray[np.float32]:
    """The largest float32 <= each threshold: for float32 x, ``x <= t32`` iff ``x <= t``."""
    t32 = np.asarray(threshold, dtype=np.float64).astype(np.float32)
    over = t32.astype(np.float64) > threshold
    t32[over] = np.nextafter(t32[over], np.float32(-np.inf))
    return t32


def tree_tables(arrays: Mapping[str, NDArray[Any]], kind: str) -> dict[str, NDArray[Any]]:
    """Per tree, padded to the largest tree: internal nodes' feature and threshold (T, I), the
    path matrix (T, I, L) (+1: leaf in the node's left subtree, -1: right), each leaf's count
    of left turns (T, L) and value (T, L)."""
    roots, feature, threshold, left, right, value = (
        state_array(arrays, name, kind) for name in FOREST_ARRAYS[:6]
    )
    trees: list[tuple[list[int], list[tuple[int, list[tuple[int, bool]]]]]] = []
    for root in roots.tolist():
        internal: list[int] = []
        leaves: list[tuple[int, list[tuple[int, bool]]]] = []
        stack: list[tuple[int, list[tuple[int, bool]]]] = [(root, [])]
        while stack:
            node, path = stack.pop()
            if left[node] == node:
                leaves.append((node, path))
                continue
            internal.append(node)
            row = len(internal) - 1
            stack.append((int(right[node]), [*path, (row, False)]))
            stack.append((int(left[node]), [*path, (row, True)]))
        trees.append((internal, leaves))
    n_internal = max(1, max(len(t[0]) for t in trees))
    n_leaves = max(len(t[1]) for t in trees)
    shape = (len(trees), n_internal)
    tables: dict[str, NDArray[Any]] = {
        "feature": np.zeros(shape, dtype=np.int64),
        "threshold": np.zeros(shape, dtype=np.float32),
        "paths": np.zeros((*shape, n_leaves), dtype=np.float32),
        # padding leaves: no path (sum 0) and a left-turn count of 1, so they never match
        "turns": np.ones((len(trees), n_leaves), dtype=np.float32),
        "values": np.zeros((len(trees), n_leaves), dtype=np.float32),
    }
    for t, (internal, leaves) in enumerate(trees):
        tables["feature"][t, : len(internal)] = feature[internal]
        tables["threshold"][t, : len(internal)] = _float32_at_most(threshold[internal])
        for j, (node, path) in enumerate(leaves):
            for row, went_left in path:
                tables["paths"][t, row, j] = 1.0 if went_left else -1.0
            tables["turns"][t, j] = sum(went_left for _, went_left in path)
            tables["values"][t, j] = value[node]
    return tables


class Forest(nn.Module):
    """A boosted forest's logits: per tree, node tests ``x[f] <= t`` (one gather), the leaf
    reached is where (tests @ path matrix) equals the leaf's count of left turns, and the
    reached leaves' values add up per class on top of the baseline."""

    feature: Tensor
    threshold: Tensor
    paths: Tensor
    turns: Tensor
    values: Tensor
    columns: Tensor
    baseline: Tensor

    def __init__(self, arrays: Mapping[str, NDArray[Any]], kind: str) -> None:
        super().__init__()
        tables = tree_tables(arrays, kind)
        self.n_trees, self.n_internal = tables["feature"].shape
        self.register_buffer("feature", torch.from_numpy(tables["feature"].reshape(-1)))
        self.register_buffer("threshold", torch.from_numpy(tables["threshold"].reshape(-1)))
        self.register_buffer("paths", torch.from_numpy(tables["paths"]))
        self.register_buffer("turns", torch.from_numpy(tables["turns"][:, None, :]))
        self.register_buffer("values", torch.from_numpy(tables["values"][:, None, :]))
        baseline = state_array(arrays, "baseline", kind).reshape(-1)
        tree_class = state_array(arrays, "tree_class", kind).astype(np.int64)
        columns = np.zeros((len(tree_class), len(baseline)), dtype=np.float32)
        columns[np.arange(len(tree_class)), tree_class] = 1.0
        self.register_buffer("columns", torch.from_numpy(columns))
        self.register_buffer("baseline", as_tensor(baseline))
        # one score (two classes): logits [0, s] have softmax [1 - sig(s), sig(s)]
        self.binary = len(baseline) == 1

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, C): the boosted scores."""
        tests = (x.index_select(1, self.feature) <= self.threshold).to(x.dtype)
        tests = tests.reshape(-1, self.n_trees, self.n_internal).transpose(0, 1)  # (T, N, I)
        reached = (torch.matmul(tests, self.paths) == self.turns).to(x.dtype)  # (T, N, L)
        per_tree = (reached * self.values).sum(dim=2)  # (T, N)
        scores = per_tree.transpose(0, 1) @ self.columns + self.baseline
        if self.binary:
            return torch.cat([torch.zeros_like(scores), scores], dim=1)
        return scores
