"""Heads per task: a data set's heads are a dict task name → fitted estimator.

A multi-class task's head is one of :data:`~headstart.heads.HEADS` fitted on the class labels;
a multi-label task's head is a :class:`MultiLabelHead` fitted on the 0/1 indicator matrix of its
labels.  These helpers turn a task's label cells into the estimator's target and its
probabilities back into the task's class order, so callers never branch on the kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from headstart.data.manifest import Task, indicator
from headstart.errors import DataError
from headstart.heads.kinds import create_head
from headstart.heads.logistic import LogisticHead
from headstart.heads.multilabel import MultiLabelHead

__all__ = [
    "check_label_coverage",
    "indicator",
    "task_head",
    "task_proba",
    "task_target",
    "task_weights",
    "thresholds_of",
]

Cells = Sequence[Sequence[str]]


def task_target(task: Task, cells: Cells) -> NDArray[Any]:
    """What the task's head is fitted on: the class of each row (multi-class) or the (n, L)
    indicator matrix (multi-label)."""
    if task.multi_label:
        return indicator(cells, task.classes)
    return np.asarray([cell[0] for cell in cells])


def task_head(task: Task, kind: str, params: Mapping[str, Any]) -> Any:
    """An unfitted head for ``task`` of ``kind`` with ``params``."""
    if task.multi_label:
        return MultiLabelHead(kind, dict(params))
    return create_head(kind, **params)


def check_label_coverage(task: Task, cells: Cells) -> None:
    """A multi-label task's training rows must hold each label on some rows and not on others;
    raise a one-line :class:`DataError` naming the label otherwise."""
    if not task.multi_label:
        return
    Y = indicator(cells, task.classes)
    for j, label in enumerate(task.classes):
        if Y[:, j].all() or not Y[:, j].any():
            where = "every" if Y[:, j].all() else "no"
            raise DataError(
                f"label '{label}' of '{task.name}' is on {where} training image; a multi-label "
                "head needs training images with and without each label"
            )


def task_proba(task: Task, head: Any, X: NDArray[Any]) -> NDArray[np.float64]:
    """Probabilities with columns in ``task.classes`` order: softmax rows (multi-class) or
    per-label probabilities (multi-label).  A class the head never saw (a cross-validation
    fold whose training part lacks it) keeps probability 0."""
    raw = np.asarray(head.predict_proba(X), dtype=np.float64)
    if task.multi_label:
        return raw
    proba = np.zeros((len(raw), len(task.classes)))
    proba[:, [task.classes.index(str(c)) for c in head.classes_]] = raw
    return proba


def thresholds_of(task: Task, head: Any) -> NDArray[np.float64] | None:
    """A multi-label head's per-label thresholds; None for a multi-class task."""
    return np.asarray(head.thresholds_, dtype=np.float64) if task.multi_label else None


def _coef(head: LogisticHead) -> np.ndarray:
    """d(decision score)/d(raw feature): the head standardises features before its linear
    model.  One row for a binary head (the score of its second class)."""
    return np.asarray(head.coef_, dtype=np.float64) / np.asarray(head.scale_, dtype=np.float64)


def task_weights(task: Task, head: Any) -> np.ndarray | None:
    """(C, D) feature weights of each of the task's classes (labels), in task order, or None
    when the head is not linear in the features: the gradient of each class's logit (each
    label's log-odds).  A binary head has one score s; the softmax of (-s/2, s/2) gives its
    probabilities, so those are its two classes' logits."""
    if isinstance(head, MultiLabelHead):
        subs = head.estimators_
        if not all(isinstance(sub, LogisticHead) for sub in subs):
            return None
        return np.vstack([_coef(sub)[0] for sub in subs])
    if isinstance(head, LogisticHead):
        coef = _coef(head)
        rows = np.vstack([-coef / 2, coef / 2]) if coef.shape[0] == 1 else coef
        order = [list(head.classes_).index(c) for c in task.classes]
        return rows[order]
    return None
