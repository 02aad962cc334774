"""Combining members into one head per task: soft voting, greedy ensemble selection
(Caruana et al. 2004) or stacking, each learnt only from the members' out-of-fold
probabilities, with an honest out-of-fold estimate of the combination itself.

Selection weights and the stacker are fitted on out-of-fold probabilities; scoring them on
those same rows would be optimistic, so the ensemble's own estimate comes from a second,
outer cross-validation over the training rows (weights or stacker fitted on the other folds'
out-of-fold probabilities, applied to the held fold's).  Voting learns nothing, so its
estimate is the weighted mean of the members' out-of-fold probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedKFold

from headstart.data import Manifest, Task
from headstart.ensemble.members import Member
from headstart.errors import ConfigError
from headstart.heads.ensemble import EnsembleHead
from headstart.heads.oof import fit_stacker, greedy_selection, stack_features

__all__ = ["METHODS", "Combined", "combine"]

#: What ``headstart ensemble --method`` and the presets combine with.
METHODS = ("vote", "select", "stack")
#: Folds of the outer cross-validation that scores selection and stacking.
OUTER_FOLDS = 5


@dataclass
class Combined:
    """Each task's ensemble head (method ``single``: one candidate's own head), its honest
    out-of-fold probabilities of the training rows (task class order, uncalibrated) and the
    members' weights (selection; equal for voting; empty for stacking)."""

    method: str
    heads: dict[str, Any]
    oof: dict[str, np.ndarray]
    weights: dict[str, list[float]] = field(default_factory=dict)


def _head_order(task: Task, head: Any) -> list[int]:
    """Task-order columns -> the head's ``classes_`` order."""
    return [task.classes.index(str(c)) for c in head.classes_]


def _from_head_order(task: Task, head: Any, proba: np.ndarray) -> np.ndarray:
    out = np.zeros((len(proba), len(task.classes)))
    out[:, _head_order(task, head)] = proba
    return out


def _combine_oof(
    method: str, probas: list[np.ndarray], y: np.ndarray, labels: np.ndarray, fit: Any
) -> np.ndarray:
    """The outer cross-validated probabilities of a learnt combination (module docstring)."""
    counts = np.bincount(y)
    folds = min(OUTER_FOLDS, int(counts[counts > 0].min()))
    if folds < 2:
        raise ConfigError(f"too few training images per class to score '{method}' honestly")
    out = np.zeros_like(probas[0])
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=0).split(probas[0], y):
        apply = fit([p[train] for p in probas], y[train], labels)
        out[test] = apply([p[test] for p in probas])
    return out


def _weighted(weights: np.ndarray) -> Any:
    def apply(probas: Sequence[np.ndarray]) -> np.ndarray:
        return np.tensordot(weights, np.stack(probas), axes=1)

    return apply


def _select(probas: list[np.ndarray], y: np.ndarray, labels: np.ndarray) -> Any:
    """Selection weights learnt on ``probas`` (columns: ``labels``; ``y`` indexes them)."""
    weights = greedy_selection(probas, labels[y], classes=list(labels))
    return _weighted(np.asarray(weights, dtype=np.float64))


def _stack(probas: list[np.ndarray], y: np.ndarray, labels: np.ndarray) -> Any:
    """A stacker learnt on ``probas``; its output columns put back in ``labels`` order (a
    class missing from an outer fold's training part keeps probability 0)."""
    meta = fit_stacker(probas, labels[y])
    index = {c: i for i, c in enumerate(labels.tolist())}
    columns = [index[c] for c in meta.classes_.tolist()]

    def apply(held: Sequence[np.ndarray]) -> np.ndarray:
        raw = np.asarray(meta.predict_proba(stack_features(list(held))), dtype=np.float64)
        full = np.zeros((len(raw), held[0].shape[1]))
        full[:, columns] = raw
        return full

    return apply


def combine(
    members: Sequence[Member],
    slices: Sequence[tuple[int, int]],
    method: str,
    manifest: Manifest,
    rows: list[int],
) -> Combined:
    """One :class:`EnsembleHead` per task over ``members`` (reading ``slices`` of the fused
    embeddings), combined by ``method`` (see :data:`METHODS`), learnt on the out-of-fold
    probabilities of the training ``rows`` of ``manifest``."""
    if method not in METHODS:
        raise ConfigError(f"unknown ensemble method {method!r}; valid: {', '.join(METHODS)}")
    if len(members) < 2:
        raise ConfigError("an ensemble needs at least two members")
    if method != "vote":
        blind = [m.name for m in members if m.oof is None]
        if blind:
            raise ConfigError(
                f"--method {method} learns from out-of-fold predictions, which "
                f"{', '.join(blind)} cannot give (its backbone was trained on these images); "
                "use --method vote"
            )
    heads: dict[str, EnsembleHead] = {}
    oof: dict[str, np.ndarray] = {}
    weights: dict[str, list[float]] = {}
    for task in manifest.targets:
        if task.multi_label:
            raise ConfigError(
                f"task '{task.name}' is multi-label: ensembles combine multi-class tasks only"
            )
        first = members[0].heads[task.name]
        labels = np.asarray(first.classes_)
        classes = [str(c) for c in labels]
        y = np.array([classes.index(manifest.samples[i].labels[task.name][0]) for i in rows])
        parts = [(s, e, m.heads[task.name]) for m, (s, e) in zip(members, slices, strict=True)]
        if method == "vote":
            w = np.full(len(members), 1.0 / len(members))
            heads[task.name] = EnsembleHead.of(parts, "vote", weights=list(w))
            if all(m.oof is not None for m in members):
                probas = [m.oof[task.name] for m in members if m.oof is not None]
                oof[task.name] = np.tensordot(w, np.stack(probas), axes=1)
            weights[task.name] = [float(v) for v in w]
            continue
        probas = [
            m.oof[task.name][:, _head_order(task, first)] for m in members if m.oof is not None
        ]
        if method == "select":
            w = greedy_selection(probas, labels[y], classes=list(labels))
            heads[task.name] = EnsembleHead.of(parts, "select", weights=list(w))
            weights[task.name] = [float(v) for v in w]
            outer = _combine_oof(method, probas, y, labels, _select)
        else:
            meta = fit_stacker(probas, labels[y])
            heads[task.name] = EnsembleHead.of(parts, "stack", meta=meta)
            outer = _combine_oof(method, probas, y, labels, _stack)
        oof[task.name] = _from_head_order(task, first, outer)
    return Combined(method, heads, oof, weights)
