"""Features of decoded images (uploads, served requests), with warm runners: each backbone
part applies its own preprocessing and runner, and a fused backbone's columns are the parts'
side by side, as :func:`headstart.features.extract` gives them for files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.registry import BackboneRef
from headstart.features.extract import Runner, feature_runner
from headstart.features.store import EmbeddingStore

__all__ = ["ImageFeatures"]


class ImageFeatures:
    """Decoded RGB PIL images -> (N, D) features of a backbone (single or fused).  The runners
    (ONNX sessions or torch modules) are built once, here, and kept for every later call."""

    def __init__(self, ref: BackboneRef, store: EmbeddingStore, engine: str = "auto") -> None:
        self.ref = ref
        self._parts: list[tuple[Preprocessing, Runner]] = [
            (part.preprocessing, feature_runner(part, store, engine)) for part in ref.members
        ]

    def __call__(self, images: Sequence[Any]) -> np.ndarray:
        """The features of ``images`` (decoded RGB PIL images), rows in order."""
        columns = [run(np.stack([prep(image) for image in images])) for prep, run in self._parts]
        return columns[0] if len(columns) == 1 else np.concatenate(columns, axis=1)
