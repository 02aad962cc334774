"""Cross-validation of a head on cached embeddings, for one task: stratified, repeated and
group k-fold.

The samples are every usable image of the train and val splits; a test split (folders, a CSV
``split`` column or the random split ``fit`` would make) is kept aside untouched, so CV never
sees the images the final model is judged on.  A data set without a test split is used whole.

``task`` picks the label column (default: the first).  A multi-class task is scored by
accuracy and macro-F1; a multi-label task by mAP and macro-F1 at threshold 0.5 per label, its
folds stratified on each row's rarest label (see :mod:`headstart.studies.scoring`).

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
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from headstart.config import FitConfig, load_config
from headstart.data import Manifest, Task
from headstart.data.manifest import indicator, predicted_labels
from headstart.data.splits import strata
from headstart.embedding import embed_data, scan_data
from headstart.errors import ConfigError, DataError
from headstart.fsutil import atomic_write_text
from headstart.heads import create_head, task_proba
from headstart.stats.summary import Summary
from headstart.studies.scoring import (
    Cells,
    fit_fold_head,
    fold_scores,
    main_metric,
)

__all__ = [
    "CVResult",
    "FoldScore",
    "Summary",
    "cross_validate",
    "cv_samples",
    "fold_indices",
    "group_labels",
    "task_folds",
    "write_cv",
]

#: ``--group-column folder`` on a folder data set: the name of each image's parent folder.
FOLDER_GROUP = "folder"
#: How a multi-label task's fold predictions are thresholded (recorded in cv.json).
MULTI_LABEL_THRESHOLDS = "0.5 per label (not tuned inside folds)"

Fold = tuple[int, int, NDArray[np.intp], NDArray[np.intp]]
"""(repeat, fold, train rows, test rows)."""


@dataclass(frozen=True)
class FoldScore:
    """Scores of one fold: trained on ``n_train`` samples, scored on ``n_test`` held-out ones.
    ``scores`` holds the task's main score (``accuracy`` or ``mean_ap``) and ``macro_f1``."""

    repeat: int
    fold: int
    n_train: int
    n_test: int
    scores: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-able record: repeat, fold, counts, then each score by name."""
        return {
            "repeat": self.repeat,
            "fold": self.fold,
            "n_train": self.n_train,
            "n_test": self.n_test,
            **self.scores,
        }


@dataclass
class CVResult:
    """Fold scores, their summaries and the out-of-fold probabilities of a cross-validation.

    ``probabilities[r]`` holds repeat ``r``'s out-of-fold probabilities, rows following
    ``samples`` and columns following ``classes`` (the task's classes or labels);
    ``fold_of[r][i]`` is sample i's fold.
    """

    manifest: Manifest
    task: Task
    samples: list[int]
    scheme: str
    folds: list[FoldScore]
    probabilities: list[NDArray[np.float64]]
    fold_of: list[NDArray[np.intp]]
    config: FitConfig
    seconds: float
    summary: dict[str, Summary] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        """The task's classes (multi-class) or labels (multi-label): the probability columns."""
        return list(self.task.classes)

    @property
    def metrics(self) -> list[str]:
        """The score keys, main first: ``accuracy``/``mean_ap``, then ``macro_f1``."""
        return [main_metric(self.task), "macro_f1"]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record: task, metrics, scheme, sample counts, per-fold scores, summaries."""
        record: dict[str, Any] = {
            "task": self.task.name,
            "multi_label": self.task.multi_label,
            "metrics": self.metrics,
            "scheme": self.scheme,
            "n_samples": len(self.samples),
            "classes": self.classes,
            "head": self.config.head.kind,
            "backbone": self.config.backbone.name,
            "seconds": round(self.seconds, 3),
            "interval": "95% Student-t over fold scores",
            "summary": {k: asdict(v) for k, v in self.summary.items()},
            "folds": [f.to_dict() for f in self.folds],
            "data_hash": self.manifest.data_hash(),
        }
        if self.task.multi_label:
            record["thresholds"] = MULTI_LABEL_THRESHOLDS
        return record


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


def _check_counts(folds: int, repeats: int, groups: Sequence[str] | None) -> None:
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


def _check_classes(labels: Sequence[str], folds: int) -> None:
    name, smallest = min(Counter(labels).items(), key=lambda kv: kv[1])
    if smallest < folds:
        raise ConfigError(
            f"class {name!r} has {smallest} images, too few for {folds} stratified folds; "
            f"use --folds {max(2, smallest)} or fewer"
        )


def _check_labels(task: Task, cells: Cells, folds: int) -> None:
    """Every fold's training part needs images with and without each label: each label must
    be on at least ``folds`` images and missing from at least ``folds``; the message names the
    scarcest label and the most folds every label can fill."""
    Y = indicator(cells, task.classes)
    on = Y.sum(axis=0).astype(int)
    off = len(Y) - on
    scarce = np.minimum(on, off)
    j = int(np.argmin(scarce))
    if scarce[j] < folds:
        count = f"on {on[j]} images" if on[j] <= off[j] else f"on all but {off[j]} images"
        raise ConfigError(
            f"label {task.classes[j]!r} of '{task.name}' is {count}, too few for {folds} "
            f"stratified folds; use --folds {max(2, int(scarce[j]))} or fewer"
        )


def fold_indices(
    labels: Sequence[str],
    *,
    folds: int = 5,
    repeats: int = 1,
    groups: Sequence[str] | None = None,
    seed: int = 0,
    check_classes: bool = True,
) -> list[Fold]:
    """(repeat, fold, train rows, test rows) of stratified (or stratified group) k-fold on
    ``labels``, reshuffled with seed ``seed + repeat`` for each repeat.  ``check_classes``:
    each label must fill every fold (off for strata that only balance the folds)."""
    _check_counts(folds, repeats, groups)
    if groups is None and check_classes:
        _check_classes(labels, folds)
    y = np.asarray(labels)
    out = []
    for r in range(repeats):
        if groups is None:
            splitter: Any = StratifiedKFold(folds, shuffle=True, random_state=seed + r)
        else:
            splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed + r)
        with warnings.catch_warnings():
            # a rarest-label stratum smaller than the folds is expected; it only balances
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            splits = list(splitter.split(np.zeros(len(y)), y, groups))
        out += [(r, f, tr, te) for f, (tr, te) in enumerate(splits)]
    return out


def task_folds(
    task: Task,
    cells: Cells,
    *,
    folds: int = 5,
    repeats: int = 1,
    groups: Sequence[str] | None = None,
    seed: int = 0,
) -> list[Fold]:
    """:func:`fold_indices` for one task's rows: stratified on the class, or for a multi-label
    task on each row's rarest label, after checking every label can fill the folds."""
    if not task.multi_label:
        labels = [cell[0] for cell in cells]
        return fold_indices(labels, folds=folds, repeats=repeats, groups=groups, seed=seed)
    _check_counts(folds, repeats, groups)
    _check_labels(task, cells, folds)
    return fold_indices(
        strata(cells), folds=folds, repeats=repeats, groups=groups, seed=seed,
        check_classes=False,
    )  # fmt: skip


def _scheme(folds: int, repeats: int, group_column: str | None) -> str:
    kind = (
        f"stratified group {folds}-fold on {group_column!r}"
        if group_column
        else (f"stratified {folds}-fold")
    )
    return kind + (f" x {repeats} repeats" if repeats > 1 else "")


def cross_validate(
    data: str | Path,
    config: FitConfig | None = None,
    *,
    task: str | None = None,
    folds: int = 5,
    repeats: int = 1,
    group_column: str | None = None,
    seed: int = 0,
    progress: bool = True,
) -> CVResult:
    """Cross-validate the configured head for ``task`` (default: the first) on the cached
    embeddings of ``data``.

    Stratified k-fold (``repeats`` > 1: repeated with reshuffled folds) or, with
    ``group_column``, stratified group k-fold so that no group spans train and test.
    See the module docstring for which samples are used, how a multi-label task is folded and
    scored, and how intervals are computed.
    """
    cfg = config or load_config()
    create_head(cfg.head.kind, **cfg.head.params)  # fail fast on a bad head
    t0 = time.perf_counter()
    scanned = scan_data(data, cfg)
    scanned.task(task)  # fail fast on an unknown task, before embedding
    embedded = embed_data(scanned, cfg, progress=progress)
    manifest = embedded.manifest
    chosen = manifest.task(task)
    rows = cv_samples(manifest)
    cells = [manifest.samples[i].labels[chosen.name] for i in rows]
    groups = group_labels(data, manifest, rows, group_column) if group_column else None
    splits = task_folds(chosen, cells, folds=folds, repeats=repeats, groups=groups, seed=seed)
    X, width = embedded.features[rows], len(chosen.classes)
    probabilities = [np.full((len(rows), width), np.nan) for _ in range(repeats)]
    fold_of = [np.full(len(rows), -1, dtype=np.intp) for _ in range(repeats)]
    scores = []
    for r, f, train, test in splits:
        head = fit_fold_head(
            chosen, cfg.head.kind, cfg.head.params, X[train], [cells[i] for i in train]
        )
        proba = task_proba(chosen, head, X[test])
        probabilities[r][test], fold_of[r][test] = proba, f
        fold = fold_scores(chosen, [cells[i] for i in test], proba)
        scores.append(FoldScore(r, f, len(train), len(test), fold))
    result = CVResult(
        manifest, chosen, rows, _scheme(folds, repeats, group_column), scores, probabilities,
        fold_of, cfg, time.perf_counter() - t0,
    )  # fmt: skip
    result.summary = {k: Summary.of([s.scores[k] for s in scores]) for k in result.metrics}
    return result


def _oof_csv(result: CVResult) -> str:
    """One row per sample and repeat: its labels, fold, predicted label(s) and probabilities
    (multi-label: every label at or above 0.5, joined with ``|``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["path", "label", "repeat", "fold", "predicted", *(f"p:{c}" for c in result.classes)]
    )
    m, task = result.manifest, result.task
    for r, (proba, fold_of) in enumerate(zip(result.probabilities, result.fold_of, strict=True)):
        for k, i in enumerate(result.samples):
            sample, row = m.samples[i], proba[k]
            cells = [f"{v:.6f}" for v in row]
            label = "|".join(sample.labels[task.name])
            predicted = "|".join(predicted_labels(task, row, None))
            writer.writerow([m.relative(sample.path), label, r, int(fold_of[k]), predicted, *cells])
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
