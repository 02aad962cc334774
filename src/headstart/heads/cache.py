"""Fitted heads cached on disk by everything that determines them.

A head's fit is deterministic given its class, parameters, training embeddings and targets (the
heads seed their own randomness), so refitting the same data with the same config loads the
stored arrays instead of searching again.  Entries are the same safetensors + JSON pair the
bundle uses (no pickle); the JSON records the arrays' sha256, so a damaged entry is detected on
read, ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from headstart.fsutil import atomic_write_bytes, atomic_write_text
from headstart.heads.registry import export_head, import_head, params_json

__all__ = ["fit_cached"]

_VERSION = "v2"


def _key(head: Any, X: np.ndarray, y: np.ndarray) -> str:
    params = json.dumps(params_json(head), sort_keys=True)
    digest = hashlib.sha256(f"{_VERSION}\0{type(head).__name__}\0{params}".encode())
    for array in (np.ascontiguousarray(X, dtype=np.float32), np.ascontiguousarray(y)):
        digest.update(f"{array.shape}{array.dtype.str}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _load(folder: Path) -> Any | None:
    from safetensors.numpy import load

    try:
        meta = json.loads((folder / "meta.json").read_text())
        data = (folder / "head.safetensors").read_bytes()
        if hashlib.sha256(data).hexdigest() != meta.pop("sha256"):
            return None
        return import_head(load(data), meta)
    except Exception:  # a damaged entry of any kind is a cache miss, never an error
        return None


def fit_cached(head: Any, X: np.ndarray, y: Any, cache_dir: Path | None) -> Any:
    """``head.fit(X, y)``, or the identical fitted head from ``cache_dir`` (None: no cache)."""
    from safetensors.numpy import save

    target = np.asarray(y)
    if cache_dir is None:
        return head.fit(X, target)
    folder = cache_dir / _key(head, X, target)
    cached = _load(folder) if (folder / "meta.json").is_file() else None
    if cached is not None:
        return cached
    head.fit(X, target)
    arrays, meta = export_head(head)
    data = save({k: np.ascontiguousarray(v) for k, v in arrays.items()})
    atomic_write_bytes(folder / "head.safetensors", data)
    meta = {**meta, "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_text(folder / "meta.json", json.dumps(meta))  # written last: marks complete
    return head
