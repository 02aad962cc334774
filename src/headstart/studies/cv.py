"""Cross-validation of a head on cached embeddings: stratified, repeated and group k-fold.

The samples are every usable image of the train and val splits; a test split (folders, a CSV
``split`` column or the random split ``fit`` would make) is kept aside untouched, so CV never
sees the images the final model is judged on.  A data set without a test split is used whole.

Each metric is summarised by its mean over all folds, the standard deviation and a 95%
Student-t interval ``mean ± t(0.975, n-1) * std / sqrt(n)`` over the ``n = folds * repeats``
fold scores.  Fold scores share training data (and repeats reuse the same images), so the
interval is the usual, somewhat optimistic, convention, not an exact coverage guarantee.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from headstart.config import FitConfig, load_config
from headstart.data import Manifest
from headstart.errors import ConfigError, DataError
from headstart.fsutil import atomic_write_text
from headstart.heads import create_head
from headstart.stats.metrics import evaluate_predictions
from headstart.stats.summary import Summary

__all__ = [
    "CVResult",
    "FoldScore",
    "Summary",
    "cross_validate",
    "cv_samples",
    "fold_indices",
    "group_labels",
    "write_cv",
]

#: ``--group-column folder`` on a folder data set: the name of each image's parent folder.
FOLDER_GROUP = "folder"


@dataclass(frozen=True)
class FoldScore:
    """Scores of one fold: trained on ``n_train`` samples, scored on ``n_test`` held-out ones."""

    repeat: int
    fold: int
    n_train: int
    n_test: int
    accuracy: float
    macro_f1: float


@dataclass
class CVResult:
    """Fold scores, their summaries and the out-of-fold probabilities of a cross-validation.

    ``probabilities[r]`` holds repeat ``r``'s out-of-fold probabilities, rows following
    ``samples`` and columns following ``classes``; ``fold_of[r][i]`` is sample i's fold.
    """

    manifest: Manifest
    samples: list[int]
    classes: list[str]
    scheme: str
    folds: list[FoldScore]
    probabilities: list[NDArray[np.float64]]
    fold_of: list[NDArray[np.intp]]
    config: FitConfig
    seconds: float
    summary: dict[str, Summary] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record: scheme, sample counts, per-fold scores and summaries."""
        return {
            "scheme": self.scheme,
            "n_samples": len(self.samples),
            "classes": self.classes,
            "head": self.config.head.kind,
            "backbone": self.config.backbone.name,
            "seconds": round(self.seconds, 3),
            "interval": "95% Student-t over fold scores",
            "summary": {k: asdict(v) for k, v in self.summary.items()},
            "folds": [asdict(f) for f in self.folds],
            "data_hash": self.manifest.data_hash(),
        }


def cv_samples(manifest: Manifest) -> list[int]:
    """Indices of the samples CV uses: train + val, or all when there is no test split."""
    if "test" not in manifest.splits_present():
        return list(range(len(manifest.samples)))
    return [i for i, s in enumerate(manifest.samples) if s.split != "test"]


def group_labels(
    data: str | Path, manifest: Manifest, rows: Sequence[int], column: str
) -> list[str]:
    """The group of each sample in ``rows``: a column of the data set's CSV ``data``, or
    ``folder`` (the image's parent folder name) for any data set."""
    samples = [manifest.samples[i] for i in rows]
    if column == FOLDER_GROUP:
        return [s.path.parent.name for s in samples]
    source = Path(data).expanduser().resolve()
    if source.suffix.lower() != ".csv" or not source.is_file():
        raise ConfigError(
            f"--group-column {column!r} needs a CSV data set with that column; "
            f"for a folder data set use --group-column {FOLDER_GROUP}"
        )
    with source.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = [c.strip() for c in reader.fieldnames or []]
        if column not in columns:
            raise ConfigError(
                f"group column {column!r} not in {source.name}; columns: {', '.join(columns)}, "
                f"or {FOLDER_GROUP}"
            )
        reader.fieldnames = columns
        by_path = {
            (source.parent / (row.get("path") or "").strip()).resolve(): (row.get(column) or "")
            for row in reader
        }
    return [by_path.get(s.path, "").strip() for s in samples]


def _check_folds(
    labels: Sequence[str], folds: int, repeats: int, groups: Sequence[str] | None
) -> None:
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise ConfigError(f"folds must be an integer >= 2; got {folds!r}")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ConfigError(f"repeats must be an integer >= 1; got {repeats!r}")
    if groups is not None:
        n_groups = len(set(groups))
        if n_groups < folds:
            raise ConfigError(
                f"{n_groups} groups cannot fill {folds} folds; use --folds {n_groups}"
            )
        return
    name, smallest = min(Counter(labels).items(), key=lambda kv: kv[1])
    if smallest < folds:
        raise ConfigError(
            f"class {name!r} has {smallest} images, too few for {folds} stratified folds; "
            f"use --folds {max(2, smallest)} or fewer"
        )


def fold_indices(
    labels: Sequence[str],
    *,
    folds: int = 5,
    repeats: int = 1,
    groups: Sequence[str] | None = None,
    seed: int = 0,
) -> list[tuple[int, int, NDArray[np.intp], NDArray[np.intp]]]:
    """(repeat, fold, train rows, test rows) of stratified (or stratified group) k-fold,
    reshuffled with seed ``seed + repeat`` for each repeat."""
    _check_folds(labels, folds, repeats, groups)
    y = np.asarray(labels)
    out = []
    for r in range(repeats):
        if groups is None:
            splitter: Any = StratifiedKFold(folds, shuffle=True, random_state=seed + r)
        else:
            splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed + r)
        splits = splitter.split(np.zeros(len(y)), y, groups)
        out += [(r, f, tr, te) for f, (tr, te) in enumerate(splits)]
    return out


def cross_validate(
    data: str | Path,
    config: FitConfig | None = None,
    *,
    folds: int = 5,
    repeats: int = 1,
    group_column: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> CVResult:
    """Cross-validate the configured head on the cached embeddings of ``data``.

    Stratified k-fold (``repeats`` > 1: repeated with reshuffled folds) or, with
    ``group_column``, stratified group k-fold so that no group spans train and test.
    See the module docstring for which samples are used and how intervals are computed.
    """
    from headstart.embedding import embed_data

    cfg = config or load_config()
    create_head(cfg.head.kind, **cfg.head.params)  # fail fast on a bad head
    t0 = time.perf_counter()
    embedded = embed_data(data, cfg, progress=progress, plain_for="cv")
    manifest = embedded.manifest
    rows = cv_samples(manifest)
    labels = [manifest.samples[i].label for i in rows]
    groups = group_labels(data, manifest, rows, group_column) if group_column else None
    splits = fold_indices(labels, folds=folds, repeats=repeats, groups=groups, seed=seed)
    X, y, classes = embedded.features[rows], np.asarray(labels), manifest.classes
    probabilities = [np.full((len(rows), len(classes)), np.nan) for _ in range(repeats)]
    fold_of = [np.full(len(rows), -1, dtype=np.intp) for _ in range(repeats)]
    scores = []
    for r, f, train, test in splits:
        head = create_head(cfg.head.kind, **cfg.head.params).fit(X[train], y[train])
        proba = np.zeros((len(test), len(classes)))
        # a fold's training part can lack a class (group k-fold): its column stays 0
        proba[:, [classes.index(str(c)) for c in head.classes_]] = head.predict_proba(X[test])
        probabilities[r][test], fold_of[r][test] = proba, f
        predicted = [classes[j] for j in proba.argmax(axis=1)]
        m = evaluate_predictions(list(y[test]), predicted, classes, n_boot=0)
        scores.append(FoldScore(r, f, len(train), len(test), m.accuracy.value, m.macro_f1.value))
    scheme = (
        f"stratified group {folds}-fold on {group_column!r}"
        if groups is not None
        else f"stratified {folds}-fold"
    ) + (f" x {repeats} repeats" if repeats > 1 else "")
    result = CVResult(
        manifest, rows, classes, scheme, scores, probabilities, fold_of, cfg,
        time.perf_counter() - t0,
    )  # fmt: skip
    result.summary = {
        "accuracy": Summary.of([s.accuracy for s in scores]),
        "macro_f1": Summary.of([s.macro_f1 for s in scores]),
    }
    return result


def _oof_csv(result: CVResult) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["path", "label", "repeat", "fold", "predicted", *(f"p:{c}" for c in result.classes)]
    )
    m = result.manifest
    for r, (proba, fold_of) in enumerate(zip(result.probabilities, result.fold_of, strict=True)):
        for k, i in enumerate(result.samples):
            sample, row = m.samples[i], proba[k]
            cells = [f"{v:.6f}" for v in row]
            predicted = result.classes[int(row.argmax())]
            writer.writerow(
                [m.relative(sample.path), sample.label, r, int(fold_of[k]), predicted, *cells]
            )
    return buffer.getvalue()


def write_cv(result: CVResult, output: str | Path) -> Path:
    """Write ``cv.json`` (scores, summaries) and ``oof_predictions.csv`` into ``output``."""
    out = Path(output)
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "cv.json", json.dumps(result.to_dict(), indent=2) + "\n")
    atomic_write_text(out / "oof_predictions.csv", _oof_csv(result))
    return out
