"""Scikit-learn compatible classifiers on embeddings ("heads"), their factory, export, the
helpers that fit and read one head per task, and the out-of-distribution scorer.

>>> from headstart.heads import create_head
>>> head = create_head("logistic")   # or "knn", "mlp"
"""

from __future__ import annotations

from headstart.heads._base import Head, HeadNotFittedError
from headstart.heads.kinds import HEADS, create_head
from headstart.heads.knn import KNNHead
from headstart.heads.logistic import DEFAULT_CS, LogisticHead
from headstart.heads.mlp import MLPHead
from headstart.heads.multilabel import MultiLabelHead, tune_thresholds
from headstart.heads.ood import OodScorer, fit_ood
from headstart.heads.registry import HEAD_FORMAT_VERSION, export_head, import_head
from headstart.heads.tasks import (
    check_label_coverage,
    indicator,
    task_head,
    task_proba,
    task_target,
    task_weights,
    thresholds_of,
)

__all__ = [
    "DEFAULT_CS",
    "HEADS",
    "HEAD_FORMAT_VERSION",
    "Head",
    "HeadNotFittedError",
    "KNNHead",
    "LogisticHead",
    "MLPHead",
    "MultiLabelHead",
    "OodScorer",
    "check_label_coverage",
    "create_head",
    "export_head",
    "fit_ood",
    "import_head",
    "indicator",
    "task_head",
    "task_proba",
    "task_target",
    "task_weights",
    "thresholds_of",
    "tune_thresholds",
]
