"""Scikit-learn compatible classifiers on embeddings ("heads"), their registry and export.

>>> from headstart.heads import create_head
>>> head = create_head("logistic")   # or "knn", "mlp"
"""

from __future__ import annotations

from headstart.heads._base import Head, HeadNotFittedError
from headstart.heads.knn import KNNHead
from headstart.heads.logistic import DEFAULT_CS, LogisticHead
from headstart.heads.mlp import MLPHead
from headstart.heads.registry import (
    HEAD_FORMAT_VERSION,
    HEADS,
    create_head,
    export_head,
    import_head,
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
    "create_head",
    "export_head",
    "import_head",
]
