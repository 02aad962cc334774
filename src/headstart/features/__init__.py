"""Feature extraction and the on-disk embedding store (no torch import until a model is needed)."""

from __future__ import annotations

from headstart.features.extract import (
    ENGINES,
    Extraction,
    Runner,
    extract,
    feature_runner,
    resolve_engine,
)
from headstart.features.runners import ImageFeatures
from headstart.features.store import EmbeddingStore, model_key

__all__ = [
    "ENGINES",
    "EmbeddingStore",
    "Extraction",
    "ImageFeatures",
    "Runner",
    "extract",
    "feature_runner",
    "model_key",
    "resolve_engine",
]
