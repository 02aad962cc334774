"""Scikit-learn compatible classifiers on embeddings ("heads"), their registry and export.

>>> from headstart.heads import create_head
>>> head = create_head("logistic")   # or "knn", "mlp"
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from headstart.heads.torch_head import head_to_torch

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
    "head_to_torch",
    "import_head",
]


def __getattr__(name: str) -> Any:
    # head_to_torch imports torch; importing the heads (and so the bundle) must not.
    if name == "head_to_torch":
        from headstart.heads.torch_head import head_to_torch

        return head_to_torch
    raise AttributeError(f"module 'headstart.heads' has no attribute '{name}'")
