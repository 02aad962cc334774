"""Task-generic scoring for the studies: which score is a task's main one, what folds are
stratified on, a head fitted on a fold, and a head kind's cross-validated score.

* A multi-class task's main score is accuracy; a multi-label task's is mAP (``mean_ap``).
  Both come with macro-F1.  A multi-label fold is thresholded at 0.5 per label: tuning the
  thresholds would need held-out probabilities inside the fold's training part (a nested CV),
  and mAP, the main score, does not depend on them.
* Folds are stratified on each row's label, or for a multi-label task on its rarest label
  (whole label sets are mostly unique) -- the rule :mod:`headstart.data.scan` splits with.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from headstart.data import Task
from headstart.errors import DataError
from headstart.heads import check_label_coverage, task_head, task_proba, task_target
from headstart.stats import headline, task_metrics

if TYPE_CHECKING:
    import optuna

__all__ = [
    "METRIC_TITLES",
    "Cells",
    "cv_score",
    "fit_fold_head",
    "fold_scores",
    "label_text",
    "main_metric",
    "metric_title",
]

Cells = Sequence[Sequence[str]]
"""Each row's labels of one task (one for a multi-class task, 0..n for a multi-label one)."""

#: How each score key reads in tables and sentences.
METRIC_TITLES = {"accuracy": "accuracy", "mean_ap": "mAP", "macro_f1": "macro-F1"}


def main_metric(task: Task) -> str:
    """The key of the task's main score: ``accuracy`` or ``mean_ap`` (multi-label)."""
    return "mean_ap" if task.multi_label else "accuracy"


def metric_title(key: str) -> str:
    """``mean_ap`` -> ``mAP``, ``macro_f1`` -> ``macro-F1``; other keys as given."""
    return METRIC_TITLES.get(key, key)


def label_text(task: Task, labels: Sequence[str]) -> str:
    """Labels as one cell: the class, or a multi-label set joined with ``|`` in class order
    (so equal sets give equal text)."""
    if not task.multi_label:
        return labels[0]
    chosen = set(labels)
    return "|".join(c for c in task.classes if c in chosen)


def fit_fold_head(
    task: Task, kind: str, params: Mapping[str, Any], X: NDArray[Any], cells: Cells
) -> Any:
    """A head of ``kind`` for ``task`` fitted on one fold's training rows.  A multi-label label
    that is on every or no training row of the fold is a one-line :class:`DataError`."""
    try:
        check_label_coverage(task, cells)
    except DataError as exc:
        raise DataError(f"{exc} (in one fold's training part; use fewer folds)") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter of tiny folds
        return task_head(task, kind, params).fit(X, task_target(task, cells))


def fold_scores(task: Task, cells: Cells, proba: NDArray[np.float64]) -> dict[str, float]:
    """The main score and macro-F1 of ``proba`` against ``cells`` (multi-label: thresholds
    0.5), keyed ``accuracy``/``mean_ap`` and ``macro_f1``."""
    metrics = task_metrics(task, cells, proba, n_boot=0)
    return {main_metric(task): headline(metrics)[1].value, "macro_f1": metrics.macro_f1.value}


def cv_score(
    task: Task,
    kind: str,
    params: Mapping[str, Any],
    X: NDArray[Any],
    cells: Cells,
    splits: Sequence[tuple[NDArray[np.intp], NDArray[np.intp]]],
    trial: optuna.Trial | None = None,
) -> float:
    """Mean main score (accuracy or mAP) of a ``kind`` head over ``splits`` of the rows of
    ``X``/``cells``; with ``trial``, reports the running mean after each fold and raises
    ``optuna.TrialPruned`` when the pruner says so."""
    scores = []
    for step, (train, test) in enumerate(splits):
        head = fit_fold_head(task, kind, params, X[train], [cells[i] for i in train])
        proba = task_proba(task, head, X[test])
        scores.append(fold_scores(task, [cells[i] for i in test], proba)[main_metric(task)])
        if trial is not None and step < len(splits) - 1:
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                # lazy: optuna only for tuning
                import optuna

                raise optuna.TrialPruned()
    return float(np.mean(scores))
