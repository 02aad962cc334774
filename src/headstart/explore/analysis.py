"""Everything explore computes from a feature matrix: clusters, outliers, label issues, class
overlap and near-duplicates, in one frozen :class:`Exploration` the page, the CLI and the CSV
writers read.  :func:`analyse` needs no files except for the near-duplicates' pixel check.

Each step is measured (``Exploration.timings``); how they scale (n rows, d = 1280):

- PCA to 50 dims: randomized SVD, O(n d 50).
- neighbours (k = 20): exact O(n^2 d) below 12,000 rows; above, PCA-128 + faiss IVF + exact
  re-ranking, about O(n^1.5 128 + n 40 d) (see :mod:`headstart.features.neighbours`).
- clusters: k-means O(n 50 k) per k; k chosen on <= 4,000 rows; HDBSCAN on <= 10,000 rows and
  Ward on <= 5,000 (then a nearest-centre assignment, O(n 50 k)).
- outliers: isolation forest O(n log 256) per tree; LOF and kNN distance from the neighbours.
- label issues: one logistic probe with stratified 5-fold CV, O(folds x grid x n d C).
- near-duplicates: candidates from the neighbours; pixel checks on at most 5,000 pairs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from headstart.errors import DataError
from headstart.explore.clusters import cluster, reduce
from headstart.explore.duplicates import NearDuplicatePair, near_duplicates
from headstart.explore.labels import ClassOverlap, class_overlap, label_issues
from headstart.explore.outliers import outlier_scores
from headstart.features import EmbeddingStore
from headstart.features.neighbours import EXACT_BELOW, knn

__all__ = ["ClassOverlap", "Exploration", "NearDuplicatePair", "analyse"]

_NEIGHBOURS = 50  # the kNN outlier score averages 50 (explore.outliers)
_T = TypeVar("_T")


@dataclass(frozen=True)
class Exploration:
    """What ``explore`` found, one row per image (row order = ``paths`` order).

    ``labels``/``predicted``/``confidence`` are None per row when the data is unlabelled (or the
    row's class could not be judged); ``predicted``/``confidence`` come from out-of-fold
    probabilities so no row is judged by a model that saw it.  ``clusters`` maps a method
    ("kmeans", "hdbscan", "agglomerative") to an (N,) int array (-1 = HDBSCAN noise);
    ``cluster_metrics`` maps a method to its scores (k, noise, silhouette, and with labels
    purity/ari/nmi); ``typical`` maps a method to {cluster id: row indices closest to that
    cluster's centre, most typical first}.  ``outlier_score`` is in [0, 1], 1 = most unusual
    (``outlier_detectors``: each detector's rank score); ``label_issue_score`` is 1 - label
    quality (NaN for rows not judged; None when unlabelled); ``label_issues``: rows confident
    learning flags, most suspicious first.  ``features``: the (N, D) embeddings analysed.
    ``near_duplicates``: pairs of rows showing the same picture; ``class_overlap``: the most
    confused class pairs; ``root``: the data folder paths are shown relative to; ``task``: the
    task the labels come from; ``notes``: what was skipped or left out, one line each;
    ``timings``: seconds per analysis step.
    """

    paths: list[Path]
    labels: list[str | None]
    predicted: list[str | None]
    confidence: list[float | None]
    clusters: dict[str, np.ndarray]
    cluster_metrics: dict[str, dict[str, float]]
    typical: dict[str, dict[int, list[int]]]
    outlier_score: np.ndarray
    label_issue_score: np.ndarray | None
    features: np.ndarray
    classes: list[str]
    outlier_detectors: dict[str, np.ndarray] = field(default_factory=dict)
    label_issues: list[int] = field(default_factory=list)
    near_duplicates: list[NearDuplicatePair] = field(default_factory=list)
    class_overlap: list[ClassOverlap] = field(default_factory=list)
    root: Path | None = None
    task: str | None = None
    notes: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    texts: list[str] | None = None
    """Each row's text, for text data (None for images)."""

    @property
    def labelled(self) -> bool:
        """Whether any row carries a given label."""
        return any(label is not None for label in self.labels)

    def relative(self, row: int) -> str:
        """Row ``row``'s path relative to the data root (POSIX), or as stored when outside."""
        path = self.paths[row]
        if self.root is not None:
            try:
                return path.relative_to(self.root).as_posix()
            except ValueError:
                pass
        return path.as_posix()


def _neighbours(
    features: np.ndarray,
    shas: Sequence[str] | None,
    store: EmbeddingStore | None,
    keys: Sequence[str],
    exact_below: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest rows, asked of the embedding store when the rows came from it."""
    if store is not None and keys and shas is not None:
        found = store.neighbours(keys, shas, _NEIGHBOURS, exact_below=exact_below)
        if found is not None:
            return found
    return knn(features, _NEIGHBOURS, exact_below=exact_below)


def analyse(
    features: np.ndarray,
    paths: Sequence[Path],
    labels: Sequence[str | None] | None = None,
    *,
    shas: Sequence[str] | None = None,
    root: Path | None = None,
    task: str | None = None,
    seed: int = 0,
    pixel_cache: Path | None = None,
    near_duplicate_threshold: float = 0.86,
    exact_below: int = EXACT_BELOW,
    notes: Sequence[str] = (),
    texts: Sequence[str] | None = None,
    store: EmbeddingStore | None = None,
    keys: Sequence[str] = (),
) -> Exploration:
    """Run every analysis on ``features`` (one row per path).  ``labels``: each row's given
    class (None per unlabelled row, or None for unlabelled data).  ``shas``: the files' sha256,
    for the near-duplicate check (None skips it).  ``texts``: each row's text (text data: the
    near-duplicates are confirmed on characters, and the map shows the texts).  ``store`` and
    ``keys`` (the tables ``features`` came from): the neighbours are the store's answer."""
    features = np.asarray(features, dtype=np.float32)
    given: list[str | None] = list(labels) if labels is not None else [None] * len(features)
    timings: dict[str, float] = {}
    notes_out = list(notes)
    z = _timed(timings, "pca", lambda: reduce(features, seed=seed))
    indices, distances = _timed(
        timings, "neighbours", lambda: _neighbours(features, shas, store, keys, exact_below)
    )
    classes = sorted({c for c in given if c is not None})
    index = {c: i for i, c in enumerate(classes)}
    codes = np.asarray([index[c] if c is not None else -1 for c in given], dtype=np.int64)
    found = _timed(timings, "clusters", lambda: cluster(z, codes, seed=seed))
    outliers = _timed(timings, "outliers", lambda: outlier_scores(z, indices, distances, seed=seed))
    judged = _judge_labels(features, given, seed, timings, notes_out)
    pairs: list[NearDuplicatePair] = []
    if shas is not None:
        pairs = _timed(
            timings,
            "near_duplicates",
            lambda: near_duplicates(
                [Path(p) for p in paths],
                shas,
                indices,
                distances,
                threshold=near_duplicate_threshold,
                pixel_cache=pixel_cache,
                texts=texts,
            ),
        )
    return Exploration(
        paths=[Path(p) for p in paths],
        labels=given,
        predicted=judged.predicted,
        confidence=judged.confidence,
        clusters=found.labels,
        cluster_metrics=found.metrics,
        typical=found.typical,
        outlier_score=outliers.score,
        label_issue_score=judged.score,
        features=features,
        classes=classes,
        outlier_detectors=outliers.detectors,
        label_issues=judged.flagged,
        near_duplicates=pairs,
        class_overlap=judged.overlap,
        root=root,
        task=task,
        notes=notes_out,
        timings=timings,
        texts=list(texts) if texts is not None else None,
    )


@dataclass
class _Judged:
    """The probe's verdict per row (None/NaN where not judged)."""

    predicted: list[str | None]
    confidence: list[float | None]
    score: np.ndarray | None = None
    flagged: list[int] = field(default_factory=list)
    overlap: list[ClassOverlap] = field(default_factory=list)


def _judge_labels(
    features: np.ndarray,
    given: list[str | None],
    seed: int,
    timings: dict[str, float],
    notes: list[str],
) -> _Judged:
    """Out-of-fold predictions, label issues and class overlap for the labelled rows."""
    n = len(features)
    out = _Judged([None] * n, [None] * n)
    labelled = [i for i, c in enumerate(given) if c is not None]
    if not labelled:
        return out
    y = [str(given[i]) for i in labelled]
    try:
        issues = _timed(
            timings, "label_issues", lambda: label_issues(features[labelled], y, seed=seed)
        )
    except DataError as exc:  # too few images per class to judge any out of fold
        notes.append(f"label issues skipped: {exc}")
        return out
    rows = np.asarray(labelled)[issues.rows]
    out.score = np.full(n, np.nan)
    out.score[rows] = issues.score
    out.flagged = [int(rows[i]) for i in issues.ranked]
    best = np.argmax(issues.proba, axis=1)
    for r, j, p in zip(rows, best, issues.proba, strict=True):
        out.predicted[r], out.confidence[r] = issues.classes[j], float(p[j])
    if issues.skipped_classes:
        notes.append(
            "label issues not judged for classes with one image: "
            + ", ".join(issues.skipped_classes)
        )
    position = {c: i for i, c in enumerate(issues.classes)}
    codes = np.asarray([position[c] for c in issues.given], dtype=np.int64)
    out.overlap = _timed(
        timings, "class_overlap", lambda: class_overlap(codes, issues.proba, issues.classes)
    )
    return out


def _timed(timings: dict[str, float], name: str, step: Callable[[], _T]) -> _T:
    start = time.perf_counter()
    result = step()
    timings[name] = time.perf_counter() - start
    return result
