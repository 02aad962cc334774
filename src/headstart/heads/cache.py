"""Fitted heads cached on disk by everything that determines them.

A head's fit is deterministic given its kind, parameters, training embeddings and labels (the
heads seed their own randomness), so refitting the same data with the same config loads the
stored arrays instead of searching again.  Entries are the same safetensors + JSON pair the
bundle uses (no pickle); a damaged entry is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart.fsutil import atomic_write_bytes, atomic_write_text
from headstart.heads.registry import export_head, import_head

__all__ = ["fit_head_cached"]

_VERSION = "v1"


def _key(kind: str, params: dict[str, Any], features: np.ndarray, labels: Sequence[str]) -> str:
    digest = hashlib.sha256(f"{_VERSION}\0{kind}\0{json.dumps(params, sort_keys=True)}".encode())
    digest.update(str(features.shape).encode())
    digest.update(np.ascontiguousarray(features, dtype=np.float32).tobytes())
    digest.update("\0".join(map(str, labels)).encode())
    return digest.hexdigest()


def _load(folder: Path) -> Any | None:
    from safetensors.numpy import load_file

    try:
        meta = json.loads((folder / "meta.json").read_text())
        return import_head(load_file(str(folder / "head.safetensors")), meta)
    except Exception:  # a damaged entry of any kind is a cache miss, never an error
        return None


def fit_head_cached(
    head: Any,
    kind: str,
    params: dict[str, Any],
    features: np.ndarray,
    labels: Sequence[str],
    cache_root: Path,
) -> Any:
    """``head.fit(features, labels)``, or the identical fitted head from ``cache_root``."""
    from safetensors.numpy import save

    folder = cache_root / "heads" / _key(kind, params, features, labels)
    cached = _load(folder) if (folder / "meta.json").is_file() else None
    if cached is not None:
        return cached
    head.fit(features, list(labels))
    arrays, meta = export_head(head)
    atomic_write_bytes(
        folder / "head.safetensors", save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    )
    atomic_write_text(folder / "meta.json", json.dumps(meta))  # written last: marks complete
    return head
