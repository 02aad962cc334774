"""Statistics below every study: metrics with intervals (multi-class and multi-label, one entry
point per task), calibration, temperature scaling, paired tests, transferability scores and
out-of-distribution detection (AUROC, FPR at 95% TPR)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from headstart.data.manifest import Task, indicator
from headstart.stats.calibration import (
    ReliabilityBins,
    expected_calibration_error,
    reliability_bins,
)
from headstart.stats.metrics import ClassMetrics, Interval, Metrics, evaluate_predictions
from headstart.stats.multilabel import LabelMetrics, MultiLabelMetrics, multilabel_metrics
from headstart.stats.ood import OodMetrics, auroc, fpr_at_tpr, ood_metrics

__all__ = [
    "ClassMetrics",
    "Interval",
    "LabelMetrics",
    "Metrics",
    "MultiLabelMetrics",
    "OodMetrics",
    "ReliabilityBins",
    "TaskMetrics",
    "auroc",
    "evaluate_predictions",
    "expected_calibration_error",
    "fpr_at_tpr",
    "headline",
    "metrics_from_dict",
    "multilabel_metrics",
    "ood_metrics",
    "reliability_bins",
    "task_metrics",
]

TaskMetrics = Metrics | MultiLabelMetrics


def task_metrics(
    task: Task,
    cells: Sequence[Sequence[str]],
    proba: np.ndarray,
    *,
    thresholds: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> TaskMetrics:
    """Metrics of one task: ``cells`` are the true labels per image, ``proba`` columns follow
    ``task.classes``; a multi-label task is thresholded per label (0.5 where not given)."""
    if task.multi_label:
        cut = thresholds if thresholds is not None else np.full(len(task.classes), 0.5)
        Y = indicator(cells, task.classes)
        return multilabel_metrics(Y, proba, cut, task.classes, n_boot=n_boot, seed=seed)
    classes = list(task.classes)
    return evaluate_predictions(
        [cell[0] for cell in cells],
        [classes[j] for j in np.asarray(proba).argmax(axis=1)],
        classes,
        n_boot=n_boot,
        seed=seed,
        proba=proba,
    )


def metrics_from_dict(d: Mapping[str, Any]) -> TaskMetrics:
    """Either kind of task metrics from its ``to_dict`` form."""
    if d.get("kind") == "multi_label":
        return MultiLabelMetrics.from_dict(d)
    return Metrics.from_dict(d)


def headline(metrics: TaskMetrics) -> tuple[str, Interval]:
    """The task's main score and its name: accuracy (multi-class) or mAP (multi-label)."""
    if isinstance(metrics, MultiLabelMetrics):
        return "mAP", metrics.mean_ap
    return "accuracy", metrics.accuracy
