"""Task heads: fitting one per task, per-label thresholds, and pickle-free export of the set.

A multi-label task gets a :class:`LabelSetHead`: one binary head per label (of the configured
kind, so ``logistic`` keeps its CV-chosen ``C`` per label), whose positive-class probability is
the label's sigmoid score.  Its decision thresholds start at 0.5 and are tuned on validation by
:func:`tune_thresholds` (the F1-best threshold per label).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from headstart.data.manifest import Task
from headstart.errors import BundleError, DataError
from headstart.heads import create_head, export_head, import_head

__all__ = [
    "LabelSetHead",
    "export_task_heads",
    "fit_task_head",
    "import_task_heads",
    "indicator",
    "task_proba",
    "tune_thresholds",
]


@dataclass
class LabelSetHead:
    """A multi-label head: one fitted binary head (classes 0/1) per label, and thresholds."""

    labels: list[str]
    heads: list[Any]
    thresholds: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    @property
    def classes_(self) -> NDArray[Any]:
        return np.asarray(self.labels)

    @property
    def n_features_in_(self) -> int:
        return int(self.heads[0].n_features_in_)

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """(n, L) independent probabilities, one column per label (rows need not sum to 1)."""
        columns = []
        for head in self.heads:
            proba = head.predict_proba(X)
            columns.append(proba[:, list(head.classes_).index(1)])
        return np.column_stack(columns).astype(np.float64)

    def predict(self, X: Any) -> NDArray[np.bool_]:
        """(n, L) booleans: each label's probability at or above its threshold."""
        return self.predict_proba(X) >= self.thresholds


def indicator(cells: Sequence[Sequence[str]], labels: Sequence[str]) -> NDArray[np.int8]:
    """(n, L) 0/1 matrix: row i has a 1 for each of ``cells[i]``'s labels."""
    index = {label: j for j, label in enumerate(labels)}
    out = np.zeros((len(cells), len(labels)), dtype=np.int8)
    for i, cell in enumerate(cells):
        for label in cell:
            if label in index:
                out[i, index[label]] = 1
    return out


def fit_task_head(
    task: Task, kind: str, params: Mapping[str, Any], X: NDArray[Any], cells: Sequence[Any]
) -> Any:
    """Fit the head of one task on training features ``X`` and each row's labels ``cells``."""
    if not task.multi_label:
        return create_head(kind, **params).fit(X, [cell[0] for cell in cells])
    Y = indicator(cells, task.classes)
    heads = []
    for j, label in enumerate(task.classes):
        column = Y[:, j]
        if column.all() or not column.any():
            where = "every" if column.all() else "no"
            raise DataError(
                f"label '{label}' of '{task.name}' is on {where} training image; a multi-label "
                "head needs training images with and without each label"
            )
        heads.append(create_head(kind, **params).fit(X, column))
    return LabelSetHead(list(task.classes), heads, np.full(len(task.classes), 0.5))


def task_proba(head: Any, X: NDArray[Any], classes: Sequence[str]) -> NDArray[np.float64]:
    """Probabilities with columns in ``classes`` order (softmax rows, or per-label sigmoids)."""
    raw = np.asarray(head.predict_proba(X), dtype=np.float64)
    order = [list(head.classes_).index(c) for c in classes]
    return raw[:, order]


def tune_thresholds(Y: NDArray[Any], P: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per label, the probability threshold with the best F1 on (Y, P); 0.5 for a label with
    no positive row (nothing to tune on).  The threshold is the midpoint between the lowest
    score kept positive and the next lower score, so it generalises a little better than the
    score itself."""
    thresholds = np.full(P.shape[1], 0.5)
    for j in range(P.shape[1]):
        y, p = Y[:, j].astype(bool), P[:, j]
        if not y.any():
            continue
        order = np.argsort(-p, kind="stable")
        ps, ys = p[order], y[order]
        ends = np.flatnonzero(np.r_[ps[1:] != ps[:-1], True])  # last index of each tie group
        tp = np.cumsum(ys)[ends]
        fp = ends + 1 - tp
        f1 = 2 * tp / (2 * tp + fp + (y.sum() - tp))
        best = int(np.argmax(f1))
        below = ps[ends[best] + 1] if ends[best] + 1 < len(ps) else 0.0
        thresholds[j] = float((ps[ends[best]] + below) / 2)
    return thresholds


def export_task_heads(
    tasks: Sequence[Task], heads: Mapping[str, Any]
) -> tuple[dict[str, NDArray[Any]], list[dict[str, Any]]]:
    """All task heads as one flat array dict (keys prefixed by task position) and a JSON list
    with each task and its head meta (a multi-label task: one meta per label, and thresholds)."""
    arrays: dict[str, NDArray[Any]] = {}
    metas: list[dict[str, Any]] = []
    for t, task in enumerate(tasks):
        head = heads[task.name]
        entry: dict[str, Any] = {"task": task.to_dict()}
        if isinstance(head, LabelSetHead):
            entry["label_heads"] = []
            for j, sub in enumerate(head.heads):
                sub_arrays, sub_meta = export_head(sub)
                arrays.update({f"{t}/{j}/{k}": v for k, v in sub_arrays.items()})
                entry["label_heads"].append(sub_meta)
            entry["thresholds"] = [float(x) for x in head.thresholds]
        else:
            head_arrays, entry["head"] = export_head(head)
            arrays.update({f"{t}/{k}": v for k, v in head_arrays.items()})
        metas.append(entry)
    return arrays, metas


def _prefixed(arrays: Mapping[str, NDArray[Any]], prefix: str) -> dict[str, NDArray[Any]]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def import_task_heads(
    arrays: Mapping[str, NDArray[Any]], metas: Any
) -> tuple[list[Task], dict[str, Any]]:
    """Inverse of :func:`export_task_heads`; raises :class:`BundleError` on a malformed meta."""
    if not isinstance(metas, list) or not metas:
        raise BundleError("bundle 'tasks' must be a non-empty list")
    tasks: list[Task] = []
    heads: dict[str, Any] = {}
    for t, entry in enumerate(metas):
        try:
            spec = entry["task"]
            task = Task(str(spec["name"]), tuple(spec["classes"]), bool(spec["multi_label"]))
            if task.multi_label:
                subs = [
                    import_head(_prefixed(arrays, f"{t}/{j}/"), meta)
                    for j, meta in enumerate(entry["label_heads"])
                ]
                thresholds = np.asarray(entry["thresholds"], dtype=np.float64)
                if len(subs) != len(task.classes) or thresholds.shape != (len(subs),):
                    raise BundleError(f"task '{task.name}' has mismatched label heads")
                heads[task.name] = LabelSetHead(list(task.classes), subs, thresholds)
            else:
                heads[task.name] = import_head(_prefixed(arrays, f"{t}/"), entry["head"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"bundle task {t} is malformed: {exc}") from None
        tasks.append(task)
    return tasks, heads
