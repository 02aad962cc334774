"""Scikit-learn compatible classifiers on embeddings ("heads"), their factory, export, the
helpers that fit and read one head per task, ensembles and the out-of-fold machinery they learn
from, and the out-of-distribution scorer.

>>> from headstart.heads import create_head
>>> head = create_head("logistic")   # or "knn", "mlp", "hgb", "lightgbm", "bagging"
"""

from __future__ import annotations

from headstart.heads._base import Head, HeadNotFittedError
from headstart.heads.bagging import BaggedHead
from headstart.heads.boosting import HGBHead, LightGBMHead
from headstart.heads.ensemble import METHODS, EnsembleHead
from headstart.heads.kinds import HEADS, create_head
from headstart.heads.knn import KNNHead
from headstart.heads.logistic import DEFAULT_CS, LogisticHead
from headstart.heads.mlp import MLPHead
from headstart.heads.multilabel import MultiLabelHead, tune_thresholds
from headstart.heads.ood import OodScorer, fit_ood
from headstart.heads.oof import (
    fit_stacker,
    greedy_selection,
    out_of_fold_proba,
    refit_factory,
    stack_features,
)
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
    "METHODS",
    "BaggedHead",
    "EnsembleHead",
    "HGBHead",
    "Head",
    "HeadNotFittedError",
    "KNNHead",
    "LightGBMHead",
    "LogisticHead",
    "MLPHead",
    "MultiLabelHead",
    "OodScorer",
    "check_label_coverage",
    "create_head",
    "export_head",
    "fit_ood",
    "fit_stacker",
    "greedy_selection",
    "import_head",
    "indicator",
    "out_of_fold_proba",
    "refit_factory",
    "stack_features",
    "task_head",
    "task_proba",
    "task_target",
    "task_weights",
    "thresholds_of",
    "tune_thresholds",
]
