"""A stand-in text encoder for tests that exercise what surrounds the encoder (reports,
comparisons, presets): each text's words hashed into as many buckets as the encoder is wide (384
for MiniLM) and L2-normalised, so texts sharing words lie near each other, as an encoder's
embeddings of one topic do.  Patch it in with :func:`use_bag_of_words`; the real encoder is
tested in tests/test_text_encoders.py."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from headstart.backbones import BackboneRef
from headstart.features import Extraction

__all__ = ["DIM", "BagOfWords", "bag_of_words", "extract_texts", "use_bag_of_words"]

DIM = 384


def bag_of_words(texts: Sequence[str], dim: int = DIM) -> np.ndarray:
    """(N, dim) hashed word counts, rows L2-normalised."""
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


class BagOfWords:
    """Stands in for :class:`headstart.features.text_engine.TextFeatures`."""

    def __init__(self, ref: BackboneRef, *args: Any, **kwargs: Any) -> None:
        self.dim = ref.feature_dim

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        return bag_of_words(texts, self.dim)


def extract_texts(
    texts: Sequence[str], shas: Any, ref: BackboneRef, *args: Any, **kwargs: Any
) -> Extraction:
    """Stands in for :func:`headstart.features.text_engine.extract_texts`."""
    features = bag_of_words(texts, ref.feature_dim)
    return Extraction(features, n_computed=len(texts), engine="bag-of-words")


def use_bag_of_words(mp: pytest.MonkeyPatch) -> None:
    """Every text embedding (fit, evaluate, predict, explain) through :func:`bag_of_words`."""
    from headstart.features import text_engine

    mp.setattr(text_engine, "extract_texts", extract_texts)
    mp.setattr(text_engine, "TextFeatures", BagOfWords)
