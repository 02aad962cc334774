"""Fitted heads cached on disk by everything that determines them.

A head's fit is deterministic given its class, parameters, training embeddings and targets (the
heads seed their own randomness), so refitting the same data with the same config loads the
stored arrays instead of searching again.  Entries are the same safetensors + JSON pair the
bundle uses (no pickle), plus the head's out-of-fold probabilities (``oof_proba_``) when its fit
made them; the JSON records the files' sha256 and is itself a verified entry
(:mod:`headstart.fsutil`), so a damaged entry is detected on read, reported, removed and fitted
again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load, save

from headstart.fsutil import atomic_write_bytes, discard_entry, read_entry, write_entry
from headstart.heads.registry import export_head, import_head, params_json

__all__ = ["fit_cached"]

_VERSION = "v3"


def _key(head: Any, X: np.ndarray, y: np.ndarray) -> str:
    params = json.dumps(params_json(head), sort_keys=True)
    digest = hashlib.sha256(f"{_VERSION}\0{type(head).__name__}\0{params}".encode())
    for array in (np.ascontiguousarray(X, dtype=np.float32), np.ascontiguousarray(y)):
        digest.update(f"{array.shape}{array.dtype.str}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _load(folder: Path) -> Any | None:
    document = read_entry(folder / "meta.json")
    if document is None:
        return None
    try:
        meta = json.loads(document)
        files = meta.pop("files")
        arrays = {}
        for name, sha in files.items():
            data = (folder / name).read_bytes()
            if hashlib.sha256(data).hexdigest() != sha:
                raise ValueError(f"{name} does not match its sha256")
            arrays[name] = load(data)
        head = import_head(arrays["head.safetensors"], meta)
        if "oof.safetensors" in arrays:
            head.oof_proba_ = arrays["oof.safetensors"]["oof"]
        return head
    except Exception as exc:  # a damaged entry of any kind is a cache miss, never an error
        discard_entry(folder / "meta.json", f"is unusable ({exc})")
        return None


def fit_cached(head: Any, X: np.ndarray, y: Any, cache_dir: Path | None) -> Any:
    """``head.fit(X, y)``, or the identical fitted head from ``cache_dir`` (None: no cache)."""
    target = np.asarray(y)
    if cache_dir is None:
        return head.fit(X, target)
    folder = cache_dir / _key(head, X, target)
    cached = _load(folder)
    if cached is not None:
        return cached
    head.fit(X, target)
    arrays, meta = export_head(head)
    files = {"head.safetensors": save({k: np.ascontiguousarray(v) for k, v in arrays.items()})}
    oof = getattr(head, "oof_proba_", None)
    if oof is not None:
        files["oof.safetensors"] = save({"oof": np.ascontiguousarray(oof)})
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
    digests = {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}
    write_entry(folder / "meta.json", json.dumps({**meta, "files": digests}).encode())  # done
    return head
