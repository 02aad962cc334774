"""2-D maps of the embeddings: PCA, t-SNE and UMAP coordinates of the L2-normalised features.

- PCA: scikit-learn's (randomized for large inputs), seeded; instant.
- t-SNE: scikit-learn's Barnes-Hut t-SNE on the first 50 principal components.
- UMAP: umap-learn, when it is importable (an optional package; numba compiles its kernels once
  per process), on the same 50 components.  Without it the method is left out and
  :attr:`Projections.notes` says why (the page shows it).

t-SNE and UMAP are fitted on at most :data:`LAYOUT_MAX_POINTS` rows (a seeded sample); every
other row is placed at the distance-weighted mean of its 5 nearest fitted rows (in the
50-component space), so every image is on every map and the note on the page says so.

Measured on 1280-d vectors (10 Gaussian clusters, one thread, on a shared 2-core machine under a
load of 4-6, so a quiet machine is faster), seconds:

====================  ======  ======  =======
method                 n=300  n=2000  n=10000
====================  ======  ======  =======
PCA (2 components)      0.08    0.18     0.65
PCA to 50 (t-SNE/UMAP)  0.13    0.80     4.1
t-SNE, all rows          3.5    32.3    249
UMAP, all rows           2.2    22.5    185
====================  ======  ======  =======

so with the 2,000-row cap t-SNE or UMAP of 10,000 rows costs about what 2,000 do (plus 4 s of
PCA and well under a second of placement).  UMAP also pays ``import umap`` (49 s the first time
numba compiles and caches it on a machine, 3 s after) and a JIT of its layout kernels in every
new process (30-40 s here, on the first fit).

The t-SNE and UMAP coordinates may be cached (``cache``: a folder, e.g. the cache root's
``report-overlays``) as verified entries (:func:`headstart.fsutil.write_entry`) keyed by the
features' bytes, the method, the seed and the cap; a damaged entry is computed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import ConfigError
from headstart.features.neighbours import normalise
from headstart.fsutil import read_entry, write_entry

__all__ = [
    "LAYOUT_MAX_POINTS",
    "METHODS",
    "METHOD_NAMES",
    "Projections",
    "project",
    "projections",
    "umap_unavailable",
]

METHODS = ("pca", "tsne", "umap")
"""The projections this module knows, in the order the page offers them."""
METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
"""How the page names each method."""
LAYOUT_MAX_POINTS = 2000
"""t-SNE and UMAP are fitted on at most this many rows; the rest are placed beside their
nearest fitted neighbours (t-SNE of 10,000 rows took 249 s here, of 2,000 rows 32 s)."""
_PLACE_NEIGHBOURS = 5
_CACHE_VERSION = "explore-map-v1"


@dataclass(frozen=True)
class Projections:
    """``coords``: method -> (N, 2) float array, for each method that ran; ``notes``: method ->
    one line for the page (why a method is missing, or how its map was made); ``timings``:
    method -> seconds (0 for a cached map)."""

    coords: dict[str, np.ndarray]
    notes: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def project(
    features: np.ndarray, methods: Sequence[str] = METHODS, seed: int = 0
) -> dict[str, np.ndarray]:
    """(N, 2) coordinates per available method of the L2-normalised rows of ``features``; an
    unavailable method (UMAP without umap-learn) is left out (see :func:`projections` for why)."""
    return projections(features, methods, seed).coords


def projections(
    features: np.ndarray,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    *,
    cache: Path | None = None,
    max_points: int = LAYOUT_MAX_POINTS,
) -> Projections:
    """Each method's 2-D map of ``features`` (N, D), with notes and timings; see the module."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ConfigError(f"unknown projection {unknown[0]!r}: choose from {', '.join(METHODS)}")
    if max_points < 10:
        raise ConfigError(f"max_points must be at least 10, got {max_points}")
    x = _normalised(features)
    n = len(x)
    coords: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}
    timings: dict[str, float] = {}
    reduced: np.ndarray | None = None
    for method in dict.fromkeys(methods):
        if method == "umap":
            missing = umap_unavailable()
            if missing is not None:
                notes[method] = missing
                continue
        start = time.perf_counter()
        if n < 3 or not np.any(x.std(axis=0) > 0):
            coords[method] = np.zeros((n, 2))
            notes[method] = "too few distinct points for a map: all drawn at the centre"
        elif method == "pca":
            coords[method] = _pca(x, 2, seed)
        else:
            key = _cache_key(x, method, seed, max_points) if cache is not None else ""
            cached = _read(cache / f"map-{key}.npy") if cache is not None else None
            if cached is not None and cached.shape == (n, 2):
                coords[method] = cached
            else:
                if reduced is None:
                    reduced = _pca(x, 50, seed)
                coords[method] = _layout(reduced, method, seed, max_points)
                if cache is not None:
                    _write(cache / f"map-{key}.npy", coords[method])
            if n > max_points:
                notes[method] = (
                    f"{METHOD_NAMES[method]} fitted on {max_points:,} of {n:,} images (a seeded"
                    " sample); the others are placed beside their nearest fitted neighbours"
                )
        timings[method] = time.perf_counter() - start
    return Projections(coords=coords, notes=notes, timings=timings)


def umap_unavailable() -> str | None:
    """Why UMAP cannot run here (umap-learn missing or broken), or None when it can."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import umap  # noqa: F401  (optional: only its presence is checked here)
    except ImportError as exc:
        return (
            f"UMAP unavailable: umap-learn is not installed ({exc.msg}); "
            "pip install umap-learn to add it"
        )
    except Exception as exc:  # a broken numba/llvmlite install fails in many ways
        return f"UMAP unavailable: importing umap-learn failed ({type(exc).__name__}: {exc})"
    return None


def _normalised(features: np.ndarray) -> np.ndarray:
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ConfigError(f"features must be a 2-D (rows, dims) array, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ConfigError("features contain NaN or infinite values: re-extract the embeddings")
    return normalise(x)


def _pca(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA  # scikit-learn is slow to import: only when drawing
    from threadpoolctl import threadpool_limits

    k = min(k, len(x) - 1, x.shape[1])
    # one thread: on a busy small machine BLAS thread pools were 10x slower (report/maps.py)
    with threadpool_limits(1):
        out = PCA(n_components=k, random_state=seed).fit_transform(x)
    return np.asarray(out, dtype=np.float64)


def _layout(z: np.ndarray, method: str, seed: int, max_points: int) -> np.ndarray:
    """t-SNE or UMAP of ``z`` (PCA-50 rows): fitted on a seeded sample when there are more
    than ``max_points`` rows, the rest placed by their nearest fitted neighbours."""
    n = len(z)
    fitted = np.arange(n)
    if n > max_points:
        fitted = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    sample = z[fitted]
    with warnings.catch_warnings():
        # umap/numba/sklearn warn about thread counts and sparse graphs: not the user's concern
        warnings.simplefilter("ignore")
        points = _tsne(sample, seed) if method == "tsne" else _umap(sample, seed)
    points = np.nan_to_num(np.asarray(points, dtype=np.float64))
    if n == len(fitted):
        return points
    out = np.zeros((n, 2))
    out[fitted] = points
    rest = np.setdiff1d(np.arange(n), fitted)
    out[rest] = _place(z[rest], sample, points)
    return out


def _tsne(z: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = min(30.0, (len(z) - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, n_jobs=1)
    with threadpool_limits(1):
        return np.asarray(tsne.fit_transform(z))


def _umap(z: np.ndarray, seed: int) -> np.ndarray:
    import umap

    n = len(z)
    # spectral initialisation needs a connected graph of some size; tiny sets start at random
    reducer: Any = umap.UMAP(
        n_neighbors=max(2, min(15, n - 1)),
        min_dist=0.1,
        init="spectral" if n > 50 else "random",
        random_state=seed,
        n_jobs=1,  # a seed makes umap single-threaded anyway; saying so silences its warning
    )
    return np.asarray(reducer.fit_transform(z))


def _place(rest: np.ndarray, sample: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Each row of ``rest`` at the inverse-distance-weighted mean of the map positions of its
    nearest rows of ``sample``."""
    k = min(_PLACE_NEIGHBOURS, len(sample))
    squared = (sample**2).sum(axis=1)
    out = np.empty((len(rest), 2))
    for lo in range(0, len(rest), 2048):  # bounded memory: 2048 x max_points distances at once
        chunk = rest[lo : lo + 2048]
        d2 = (chunk**2).sum(axis=1)[:, None] + squared[None, :] - 2.0 * chunk @ sample.T
        near = np.argpartition(d2, k - 1, axis=1)[:, :k]
        dist = np.sqrt(np.maximum(np.take_along_axis(d2, near, axis=1), 0.0))
        weights = 1.0 / (dist + 1e-6)
        out[lo : lo + len(chunk)] = (weights[:, :, None] * points[near]).sum(axis=1) / weights.sum(
            axis=1, keepdims=True
        )
    return out


def _cache_key(x: np.ndarray, method: str, seed: int, max_points: int) -> str:
    digest = hashlib.sha256(f"{_CACHE_VERSION}|{method}|{seed}|{max_points}|{x.shape}".encode())
    digest.update(np.ascontiguousarray(x).tobytes())
    return digest.hexdigest()


def _read(path: Path) -> np.ndarray | None:
    data = read_entry(path)
    if data is None:
        return None
    try:
        return np.asarray(np.load(io.BytesIO(data), allow_pickle=False), dtype=np.float64)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile):
        return None


def _write(path: Path, points: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(points, dtype=np.float64), allow_pickle=False)
    # a read-only or full cache costs the next run a recomputation, not this one
    with contextlib.suppress(OSError):
        write_entry(path, buffer.getvalue())
