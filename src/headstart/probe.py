"""The probe: one head per task on cached embeddings, fitted on every labelled image that is not
held out for reporting, with its validation estimate, calibration and thresholds taken from
out-of-fold predictions, so no image is set aside for them.

- Held-out split: ``test`` when the data has one, else ``val``; every other image trains the
  heads (a given or carved val split joins train when a test split exists: nothing needs it).
- Validation: the out-of-fold probabilities of the training images (``cv`` in the metrics):
  the logistic head keeps those of the C search at the chosen C; other heads are refitted on
  ``CV_FOLDS`` folds with their parameters fixed.
- Calibration: a temperature per multi-class task (per label for a multi-label task) fitted on
  those out-of-fold probabilities and stored in the bundle; a multi-label task's thresholds are
  then tuned on them (F1-best per label).
- Out-of-distribution scorer (:mod:`headstart.heads.ood`): a bank of the training embeddings,
  its threshold set on the same images left out one at a time.
- Unlabelled embeddings (``fit --unlabelled``, multi-class tasks): each task's head is fitted
  on the training images plus the unlabelled ones pseudo-labelled by the method cross-
  validation chose (:mod:`headstart.heads.semi`); its out-of-fold probabilities are that
  cross-validation's, so validation and calibration stay on labelled images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from headstart.cache import CacheRoot
from headstart.config import FitConfig
from headstart.data import Manifest, Task
from headstart.data.manifest import indicator
from headstart.data.splits import strata as stratify
from headstart.embedding import EmbeddedData
from headstart.heads import (
    OodScorer,
    check_label_coverage,
    fit_ood,
    task_head,
    task_proba,
    task_target,
    thresholds_of,
    tune_thresholds,
)
from headstart.heads.cache import fit_cached
from headstart.heads.semi import select
from headstart.runfolder import MetricsRecord
from headstart.stats import headline, task_metrics
from headstart.stats.temperature import (
    apply_calibration,
    fit_calibration,
    read_temperatures,
    temperature_entry,
)

__all__ = [
    "CV_FOLDS",
    "ProbeOutcome",
    "fit_heads",
    "held_out_split",
    "probe",
    "semi_supervised",
    "val_score",
]

CV_FOLDS = 3
Cells = list[tuple[str, ...]]


@dataclass
class ProbeOutcome:
    """The fitted heads, and per reported split and task the probabilities and metrics."""

    heads: dict[str, Any]
    probabilities: dict[str, dict[str, np.ndarray]]
    metrics: MetricsRecord
    calibration: dict[str, Any] | None = None
    """The bundle's calibration record (temperatures fitted on out-of-fold probabilities)."""
    validation: str = ""
    trained_on: int = 0
    """How many images the heads were fitted on."""
    ood: OodScorer | None = None
    """The out-of-distribution scorer of the training embeddings."""
    semi_supervised: dict[str, Any] | None = None
    """Per task, what the semi-supervised step chose and measured (with unlabelled data)."""
    unlike_unlabelled: int = 0
    """Unlabelled images left out because the OOD scorer calls them unlike the training ones."""


def held_out_split(embedded: EmbeddedData) -> str | None:
    """The split the probe reports on: test, else val, else none."""
    present = embedded.manifest.splits_present()
    return next((s for s in ("test", "val") if s in present), None)


def fit_heads(
    manifest: Manifest,
    features: np.ndarray,
    cfg: FitConfig,
    rows: list[int],
    cache: CacheRoot | None,
) -> dict[str, Any]:
    """One head per task (``head.kind``/``head.params``) fitted on the samples ``rows`` of
    ``manifest`` (``features`` row for row); fitted heads are cached under ``cache`` (None:
    not cached)."""
    samples = [manifest.samples[i] for i in rows]
    X = features[rows]
    heads = {}
    for task in manifest.targets:
        cells = [s.labels[task.name] for s in samples]
        check_label_coverage(task, cells)
        head = task_head(task, cfg.head.kind, cfg.head.params)
        # texts (a TF-IDF head's features) are not a float matrix to key the head cache by
        folder = cache.heads if cache is not None and X.dtype != object else None
        heads[task.name] = fit_cached(head, X, task_target(task, cells), folder)
    return heads


def out_of_fold(task: Task, head: Any, X: np.ndarray, cells: Cells) -> np.ndarray | None:
    """Out-of-fold probabilities of the training rows (columns in task order): the head's own
    (logistic C search) or those of ``CV_FOLDS`` refits with its parameters; None when the data
    is too small to fold."""
    own = getattr(head, "oof_proba_", None)
    if own is not None:
        if task.multi_label:
            return np.asarray(own, dtype=np.float64)
        order = [list(head.classes_).index(c) for c in task.classes]
        return np.asarray(own, dtype=np.float64)[:, order]
    strata = np.asarray(stratify(cells))
    folds = min(CV_FOLDS, int(min(np.unique(strata, return_counts=True)[1])))
    if folds < 2:
        return None
    target = task_target(task, cells)
    out = np.zeros((len(X), len(task.classes)))
    splitter = StratifiedKFold(folds, shuffle=True, random_state=0)
    try:
        for train, test in splitter.split(X, strata):
            fold_head = clone(head).fit(X[train], target[train])
            out[test] = task_proba(task, fold_head, X[test])
    except ValueError:  # a fold lost every example of a label: no estimate, not an error
        return None
    return out


def _calibrate(task: Task, oof: np.ndarray, cells: Cells) -> tuple[dict[str, Any], np.ndarray]:
    """The task's temperature record fitted on its out-of-fold probabilities, and those
    probabilities calibrated."""
    if task.multi_label:
        truth = indicator(cells, task.classes)
    else:
        truth = np.array([task.classes.index(cell[0]) for cell in cells], dtype=np.intp)
    temperature = fit_calibration(oof, truth, task.multi_label)
    return temperature_entry(temperature), apply_calibration(oof, temperature)


def semi_supervised(
    task: Task,
    X: np.ndarray,
    cells: Cells,
    unlabelled: np.ndarray,
    cfg: FitConfig,
    cache: CacheRoot | None,
) -> tuple[Any, np.ndarray | None, dict[str, Any]]:
    """The multi-class ``task``'s head fitted on ``X`` (labels ``cells``) plus the unlabelled
    rows pseudo-labelled by the method :func:`headstart.heads.semi.select` keeps, its out-of-
    fold probabilities (None when too few images to cross-validate) and the record of it."""
    h = cfg.head
    y = np.array([task.classes.index(cell[0]) for cell in cells], dtype=np.intp)
    prototype = task_head(task, h.kind, h.params)
    chosen = select(
        prototype,
        X,
        y,
        unlabelled,
        method=h.semi_supervised,
        precision=h.pseudo_label_precision,
        folds=CV_FOLDS,
        seed=cfg.data.seed,
    )
    pseudo = chosen.pseudo
    X_all = np.vstack([X, unlabelled[pseudo.rows]])
    target = np.concatenate([task_target(task, cells), np.asarray(task.classes)[pseudo.labels]])
    folder = cache.heads if cache is not None else None
    head = fit_cached(task_head(task, h.kind, h.params), X_all, target, folder)
    best = chosen.best
    per_class = np.bincount(pseudo.labels, minlength=len(task.classes))
    record = {
        "chosen": chosen.chosen,
        "reason": chosen.reason,
        "cv_folds": chosen.folds,
        "threshold": round(pseudo.threshold, 4) if np.isfinite(pseudo.threshold) else None,
        "pseudo_labels": len(pseudo.rows),
        "pseudo_labels_per_class": dict(zip(task.classes, per_class.tolist(), strict=True)),
        "pseudo_label_accuracy": best.pseudo_accuracy if best is not None else None,
        "pseudo_label_checked": best.checked if best is not None else 0,
        "candidates": [
            {
                "method": c.method,
                "cv_accuracy": c.accuracy,
                "pseudo_label_accuracy": c.pseudo_accuracy,
                "pseudo_label_checked": c.checked,
            }
            for c in chosen.candidates
        ],
    }
    return head, (best.oof_proba if best is not None else None), record


def probe(
    embedded: EmbeddedData,
    cfg: FitConfig,
    cache: CacheRoot | None,
    unlabelled: np.ndarray | None = None,
) -> ProbeOutcome:
    """Fit every task's head on all but the held-out split, validate, calibrate and tune its
    thresholds on out-of-fold probabilities, and score the held-out split (module docstring);
    with ``unlabelled`` embeddings, semi-supervised (multi-class tasks only)."""
    manifest = embedded.manifest
    held = held_out_split(embedded)
    rows = [i for i, s in enumerate(manifest.samples) if s.split != held]
    X = embedded.features[rows]
    ood = fit_ood(X, seed=cfg.data.seed, noun=manifest.noun) if X.dtype != object else None
    semi: dict[str, Any] = {}
    oofs: dict[str, np.ndarray | None] = {}
    unlike = 0
    if unlabelled is not None and ood is not None and len(unlabelled):
        # an image unlike every training image (another domain) gets no pseudo-label: the
        # precision calibrated on labelled images says nothing about it
        flagged = ood.flags(ood.score(unlabelled))
        unlabelled, unlike = unlabelled[~flagged], int(flagged.sum())
    if unlabelled is None:
        heads = fit_heads(manifest, embedded.features, cfg, rows, cache)
    else:
        heads = {}
        for task in manifest.targets:
            cells = [tuple(manifest.samples[i].labels[task.name]) for i in rows]
            heads[task.name], oofs[task.name], semi[task.name] = semi_supervised(
                task, X, cells, unlabelled, cfg, cache
            )
    cv_proba: dict[str, np.ndarray] = {}
    temperatures: dict[str, dict[str, Any]] = {}
    for task in manifest.targets:
        cells = [tuple(manifest.samples[i].labels[task.name]) for i in rows]
        if task.name in oofs:
            oof = oofs[task.name]
        else:
            oof = out_of_fold(task, heads[task.name], X, cells)
        if oof is None:
            continue
        temperatures[task.name], cv_proba[task.name] = _calibrate(task, oof, cells)
        if task.multi_label:
            Y = indicator(cells, task.classes)
            heads[task.name].thresholds_ = tune_thresholds(Y, cv_proba[task.name])
    probabilities: dict[str, dict[str, np.ndarray]] = {}
    if held is not None:
        held_rows = embedded.rows(held)
        probabilities[held] = {}
        stored = read_temperatures(temperatures)
        for task in manifest.targets:
            proba = task_proba(task, heads[task.name], embedded.features[held_rows])
            probabilities[held][task.name] = apply_calibration(proba, stored.get(task.name))
    metrics: MetricsRecord = {}
    n_boot, seed = cfg.eval.n_boot, cfg.data.seed
    if len(cv_proba) == len(manifest.targets):
        metrics["cv"] = {
            t.name: task_metrics(
                t,
                [tuple(manifest.samples[i].labels[t.name]) for i in rows],
                cv_proba[t.name],
                thresholds=thresholds_of(t, heads[t.name]),
                n_boot=n_boot,
                seed=seed,
            )
            for t in manifest.targets
        }
    for split, per_task in probabilities.items():
        metrics[split] = {
            t.name: task_metrics(
                t,
                embedded.cells(t, split),
                per_task[t.name],
                thresholds=thresholds_of(t, heads[t.name]),
                n_boot=n_boot,
                seed=seed,
            )
            for t in manifest.targets
        }
    trained = ", ".join(s for s in manifest.splits_present() if s != held)
    noun = manifest.noun
    validation = (
        f"{CV_FOLDS}-fold cross-validation on the training {noun} ({trained}): out-of-fold "
        "predictions, which also fitted the temperature"
        + (" and the label thresholds" if any(t.multi_label for t in manifest.targets) else "")
        if "cv" in metrics
        else f"none: too few {noun} per class to cross-validate"
    )
    calibration = (
        {
            "method": "temperature",
            "fitted_on": f"out-of-fold probabilities of the training {noun} ({CV_FOLDS}-fold CV)",
            "tasks": temperatures,
        }
        if temperatures
        else None
    )
    return ProbeOutcome(
        heads, probabilities, metrics, calibration, validation, len(rows), ood, semi or None, unlike
    )


def val_score(embedded: EmbeddedData, cfg: FitConfig, cache: CacheRoot | None) -> float:
    """The probe's validation score for ``--strategy auto``: heads fitted on the train split
    alone, the mean over tasks of accuracy (multi-class) or mAP (multi-label) on ``val``."""
    heads = fit_heads(embedded.manifest, embedded.features, cfg, embedded.rows("train"), cache)
    rows = embedded.rows("val")
    scores = []
    for task in embedded.manifest.targets:
        proba = task_proba(task, heads[task.name], embedded.features[rows])
        m = task_metrics(task, embedded.cells(task, "val"), proba, n_boot=0)
        scores.append(headline(m)[1].value)
    return float(np.mean(scores))
