"""The embedding map: the run's cached embeddings reduced to 2-D, cached per model and rows.

The reduced points are kept in the cache root (``report-overlays/map-<key>.npz``), keyed by the
backbone, the engine, the method and the sha256 of every row drawn, so a second report of the
same run (or of a refit on the same data) reads 2 x N numbers instead of N embeddings.  PCA is
plain numpy (a seeded randomized SVD): no scikit-learn import, a few milliseconds for 2,000
points; t-SNE (opt-in, slower) still comes from scikit-learn.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.cache import CacheRoot
from headstart.data.manifest import LABEL_SEPARATOR
from headstart.errors import HeadstartError
from headstart.features import extract
from headstart.fsutil import read_entry, write_entry
from headstart.report import plots
from headstart.report.run import RunFiles
from headstart.report.template import Section, figure, note, short

if TYPE_CHECKING:
    from headstart.model import Model

__all__ = ["MAP_METHODS", "MAX_MAP_POINTS", "TSNE_MAX_POINTS", "map_section", "pca_2d"]

MAX_MAP_POINTS = 2000
"""At most this many images (a seeded random subsample) are drawn on the embedding map."""
TSNE_MAX_POINTS = 1000
"""With ``embedding_map="tsne"``, t-SNE up to this many points (7 s for 320 on a busy 2-core
machine, measured), PCA (instant) above it."""
MAP_METHODS = ("pca", "tsne")
_TIP_CHARS = 90  # a text's tooltip on the map: enough to recognise it, 2,000 of them stay small
_MAP_VERSION = "map-v1"


def pca_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """The rows of ``features`` projected on their first two principal axes.

    A randomized SVD (subspace iteration with oversampling, as scikit-learn's randomized PCA)
    on the centred data; signs are fixed so the largest loading of each axis is positive, so
    the picture does not flip between runs.
    """
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0)
    k = min(10, *x.shape)
    q = x @ np.random.default_rng(seed).standard_normal((x.shape[1], k))
    for _ in range(7):
        q, _r = np.linalg.qr(q)
        q = x @ (x.T @ q)
    q, _r = np.linalg.qr(q)
    _u, _s, vt = np.linalg.svd(q.T @ x, full_matrices=False)
    axes = vt[:2]
    signs = np.sign(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)])
    signs[signs == 0] = 1.0
    return np.asarray(x @ (axes * signs[:, None]).T)


def _reduce(features: np.ndarray, method: str) -> tuple[np.ndarray, str]:
    from threadpoolctl import threadpool_limits  # only when a map is computed, not read

    n = len(features)
    if n < 3:
        return np.zeros((n, 2)), "too few points"
    # one thread: on a busy small machine, BLAS/OpenMP thread pools made this 10x slower (measured)
    with threadpool_limits(1):
        if method == "pca" or n > TSNE_MAX_POINTS:
            return pca_2d(features), "PCA"
        from sklearn.decomposition import PCA  # t-SNE only (opt-in): scikit-learn is slow to load
        from sklearn.manifold import TSNE

        start = PCA(n_components=min(50, n - 1, features.shape[1])).fit_transform(features)
        perplexity = min(30.0, (n - 1) / 3)
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0)
        return np.asarray(tsne.fit_transform(start)), "t-SNE"


def _embedding_rows(run: RunFiles, max_points: int) -> list[dict[str, str]]:
    rows = [r for r in run.manifest if r.get("sha256")]
    if len(rows) > max_points:
        picked = sorted(random.Random(0).sample(range(len(rows)), max_points))
        rows = [rows[i] for i in picked]
    return rows


def _map_key(run: RunFiles, engine: str, method: str, rows: list[dict[str, str]]) -> str:
    """What the points depend on: backbone (name, weights, preprocessing), engine, method and
    the embedded files in order (not the head: the map shows the backbone's features)."""
    parts = {
        "version": _MAP_VERSION,
        "backbone": run.info.get("backbone", {}),
        "engine": engine,
        "method": method,
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode())
    for row in rows:
        digest.update(row["sha256"].encode())
    return digest.hexdigest()


def _read_points(
    cache: CacheRoot, key: str, n_rows: int
) -> tuple[np.ndarray, np.ndarray, str] | None:
    """The cached (kept rows, points, method) of ``key``; None when absent or damaged (then
    they are computed again)."""
    data = read_entry(cache.overlays / f"map-{key}.npz")
    if data is None:
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as saved:
            keep, points, method = saved["keep"], saved["points"], str(saved["method"])
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile):
        return None
    if len(keep) < 3 or points.shape != (len(keep), 2):
        return None
    return (keep, points, method) if keep.min() >= 0 and keep.max() < n_rows else None


def _write_points(
    cache: CacheRoot, key: str, keep: np.ndarray, points: np.ndarray, method: str
) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, keep=keep.astype(np.int32), points=points.astype(np.float32), method=method)
    write_entry(cache.overlays / f"map-{key}.npz", buffer.getvalue())


def _compute(
    run: RunFiles,
    rows: list[dict[str, str]],
    model: Model,
    cache: CacheRoot,
    engine: str,
    method: str,
) -> tuple[np.ndarray, np.ndarray, str, int]:
    """(kept row indices, points, method used, number of rows that could not be embedded)."""
    if run.modality == "text":  # the texts are in the manifest; their paths name CSV rows
        features, failures = model.embed([r.get("text", "") for r in rows])
    else:
        result = extract(
            [run.image_path(r["path"]) for r in rows],
            [r["sha256"] for r in rows],
            model.backbone_ref,
            store=cache.store,
            engine=engine,
            progress=False,
        )
        features, failures = result.features, result.failures
    keep = np.array([i for i in range(len(rows)) if i not in failures], dtype=np.int64)
    if len(keep) < 3:
        return keep, np.zeros((len(keep), 2)), "", len(failures)
    points, used = _reduce(features[keep], method)
    return keep, points, used, len(failures)


def map_section(
    run: RunFiles,
    config: dict[str, Any],
    model: Callable[[], Model | None],
    cache: CacheRoot,
    method: str = "pca",
) -> Section:
    """Embeddings from the cache, reduced to 2-D, coloured by the first task's label.
    ``model`` loads the run's model; it is called only when the points are not cached."""
    title = "5. Embedding map"
    if run.info.get("head", {}).get("kind") == "tfidf":
        return Section("map", title, note("A TF-IDF model reads words, not embeddings: no map."))
    engine = str((config.get("extract") or {}).get("engine", "auto"))
    rows = _embedding_rows(run, MAX_MAP_POINTS)
    key = _map_key(run, engine, method, rows)
    cached = _read_points(cache, key, len(rows))
    failed = 0
    if cached is not None:
        keep, points, used = cached
    else:
        loaded = model()
        if loaded is None:
            return Section("map", title, note("Model bundle unreadable: no embedding map."))
        try:
            keep, points, used, failed = _compute(run, rows, loaded, cache, engine, method)
        except (ImportError, HeadstartError) as exc:
            if run.modality != "text":
                raise
            # a text encoder that cannot run here (its runtime missing): the rest still stands
            return Section("map", title, note(f"No embedding map: the texts cannot be embedded "
                                              f"here ({type(exc).__name__}: {exc})."))  # fmt: skip
        if len(keep) < 3:
            gone = "texts unusable" if run.modality == "text" else "images gone, cache empty"
            return Section("map", title, note(f"Embeddings unavailable ({gone})."))
        if not failed:  # a map with holes is not kept: the images may come back
            _write_points(cache, key, keep, points, used)
    task = run.tasks[0]
    labels = [rows[i].get(task.name, "").split(LABEL_SEPARATOR)[0] for i in keep]
    splits = [rows[i]["split"] for i in keep]
    text = run.modality == "text"
    caption = (
        f"{len(keep)} {run.noun} ({used} of the backbone's embeddings); dots: train, "
        "crosses: held out. Classes that overlap here are hard for any head on these features."
        + (" Hover a point for its text." if text else "")
    )
    if len(run.tasks) > 1 or task.multi_label:
        caption += f" Colours: the (first) label of task '{task.name}'."
    if failed:
        caption += f" {failed} {run.noun} could not be embedded and are not shown."
    tips = [f"{labels[j]}: {short(rows[i].get('text', ''), _TIP_CHARS)}" for j, i in
            enumerate(keep)] if text else None  # fmt: skip
    chart = plots.embedding_map(
        points, labels, splits, task.classes, f"{used} of embeddings", tips=tips, noun=run.noun
    )
    return Section("map", title, figure(chart, caption))
