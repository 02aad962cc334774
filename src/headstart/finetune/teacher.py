"""The teacher of a distillation run: any bundle, its calibrated probabilities for every image
computed once and kept in a verified cache entry.

The entry is ``CACHE/teacher-probabilities/<teacher id>.npz``: the images' content sha256 and
their concatenated per-task probability rows (tasks in order, each task's columns in its class
order).  The teacher id is the sha256 of the bundle's ``model.json``, which lists the digest of
every file the bundle loads (heads, backbone weights, OOD bank) beside its tasks and
calibration, so any change to the teacher is a new id.  A run looks its images up by content
hash and asks the teacher only for the missing ones (through :meth:`Model.task_proba`, i.e.
the embedding cache: a probe teacher whose embeddings are cached costs a head evaluation), then
writes the merged entry.  A damaged entry is removed and computed again, never trusted.
"""

from __future__ import annotations

import hashlib
import io
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.bundle import MODEL_JSON
from headstart.cache import CacheRoot
from headstart.errors import ConfigError, PathNotFoundError
from headstart.fsutil import discard_entry, read_entry, write_entry
from headstart.model import Model, load

__all__ = ["TeacherRows", "bundle_path", "load_teacher", "teacher_id", "teacher_rows"]

_FOLDER = "teacher-probabilities"


def bundle_path(path: str | Path) -> Path:
    """The bundle folder ``path`` names: a bundle, or a run folder holding one (``RUN/model``);
    a one-line error for anything else."""
    path = Path(path)
    if not path.exists():
        raise PathNotFoundError(f"teacher model not found: {path}")
    for candidate in (path, path / "model"):
        if (candidate / MODEL_JSON).is_file():
            return candidate
    raise ConfigError(
        f"teacher {path} is not a model bundle (no {MODEL_JSON}): pass a bundle folder or the "
        "run folder that holds one"
    )


def teacher_id(bundle: Path) -> str:
    """The teacher's identity: the sha256 of its ``model.json`` (see the module docstring)."""
    return hashlib.sha256((bundle / MODEL_JSON).read_bytes()).hexdigest()


def load_teacher(path: str | Path, cache: CacheRoot) -> tuple[Model, str]:
    """The teacher model at ``path`` (a bundle or a run folder) and its identity."""
    bundle = bundle_path(path)
    return load(bundle, cache=cache), teacher_id(bundle)


@dataclass
class TeacherRows:
    """The teacher's concatenated probability row of each image (by content sha256), with
    how many came from the cache and how many were computed now."""

    rows: dict[str, np.ndarray]
    failures: dict[int, str]
    """Index (into the paths asked for) -> why the teacher could not read that image."""
    cached: int
    computed: int
    seconds: float


def _entry(cache: CacheRoot, identity: str) -> Path:
    return cache.path / _FOLDER / f"{identity}.npz"


def _read(path: Path, width: int) -> dict[str, np.ndarray]:
    data = read_entry(path)
    if data is None:
        return {}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            keys, proba = npz["keys"], npz["proba"]
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as exc:
        discard_entry(path, f"cannot be read ({exc})")
        return {}
    if proba.ndim != 2 or proba.shape != (len(keys), width):
        discard_entry(path, f"holds {proba.shape} probabilities, not (n, {width})")
        return {}
    return {str(k): proba[i] for i, k in enumerate(keys.astype(str))}


def _write(path: Path, rows: dict[str, np.ndarray], width: int) -> None:
    keys = sorted(rows)
    proba = np.stack([rows[k] for k in keys]) if keys else np.empty((0, width))
    buffer = io.BytesIO()
    np.savez(buffer, keys=np.asarray(keys, dtype="S64"), proba=proba.astype(np.float64))
    write_entry(path, buffer.getvalue())


def teacher_rows(
    model: Model,
    identity: str,
    paths: Sequence[Path],
    shas: Sequence[str],
    *,
    progress: bool = False,
) -> TeacherRows:
    """The teacher's rows for ``paths`` (content hashes ``shas``), from the cache where it has
    them; the others computed in one :meth:`Model.task_proba` call and added to the entry."""
    t0 = time.perf_counter()
    width = sum(len(t.classes) for t in model.tasks)
    entry = _entry(model.cache, identity)
    known = _read(entry, width)
    wanted = {sha for sha in shas if sha}
    missing = [i for i, sha in enumerate(shas) if sha and sha not in known]
    # one teacher pass per distinct image (the same bytes under two names: once)
    first: dict[str, int] = {}
    for i in missing:
        first.setdefault(shas[i], i)
    order = list(first.values())
    failures: dict[int, str] = {}
    if order:
        probas, failed = model.task_proba([paths[i] for i in order], progress=progress)
        joined = np.concatenate([probas[t.name] for t in model.tasks], axis=1)
        for j, i in enumerate(order):
            if j in failed:
                failures[i] = failed[j]
            else:
                known[shas[i]] = joined[j]
        _write(entry, known, width)
    bad = {shas[i] for i in failures}
    failures.update({i: failures[first[sha]] for i, sha in enumerate(shas) if sha in bad})
    rows = {sha: known[sha] for sha in wanted if sha in known}
    computed = len(order) - len(bad)
    return TeacherRows(rows, failures, len(wanted) - len(order), computed, time.perf_counter() - t0)
