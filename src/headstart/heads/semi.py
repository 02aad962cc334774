"""Semi-supervised pseudo-labels on embeddings, and the choice between ways of making them.

Unlabelled embeddings become extra training rows for a normal head: a pseudo-labeller labels
the ones it is sure of, and the configured head is refitted on the labelled rows plus those
(so the bundle stores an ordinary head; nothing new is serialised).

Two pseudo-labellers, both accepting a row only above a *calibrated* confidence threshold: the
lowest threshold at which the labeller's out-of-fold predictions on labelled rows reach the
target precision (``head.pseudo_label_precision``), never a fixed 0.9.

- ``self_training``: scikit-learn's :class:`~sklearn.semi_supervised.SelfTrainingClassifier`
  around the project's :class:`~headstart.heads.LogisticHead` (its ``C`` chosen on the
  labelled rows): fit, accept the rows above the threshold.  The threshold comes from the
  ``C`` search's own out-of-fold probabilities (no extra fit).  Logistic whatever the
  configured head: it is fast, and its probabilities are the ones calibrated.  One round:
  the threshold's precision holds for the model it was calibrated on; a refitted model is
  more confident, so further rounds accept ever more rows at an unknown precision (on
  clothing_small with 10 labels per class, five rounds accepted 95% of the unlabelled images
  and the gain was gone: 72.4% against 72.5% labelled only; one round: 75.7%).
- ``label_spreading``: :class:`~sklearn.semi_supervised.LabelSpreading` on a k-nearest-
  neighbour graph of the L2-normalised embeddings (cosine neighbours); the threshold comes
  from spreading with one fold of the labels hidden at a time.

:func:`select` chooses between them and ``none`` (labelled rows only) by k-fold CV on the
labelled rows: in each fold the held-out labelled rows join the unlabelled pool with their
labels hidden, the configured head is refitted on the fold's labelled rows plus the pseudo-
labelled *unlabelled* rows and scored on the held-out rows; the held-out rows' own pseudo-
labels measure how accurate the pseudo-labels are.  The threshold is calibrated inside each
fold on its training rows only, so that measurement is honest.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import NearestNeighbors
from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier

from headstart.errors import ConfigError
from headstart.heads.logistic import LogisticHead

__all__ = [
    "CHOICES",
    "METHODS",
    "Candidate",
    "PseudoLabels",
    "Selection",
    "calibrated_threshold",
    "knn_graph",
    "pseudo_label",
    "select",
]

METHODS = ("self_training", "label_spreading")
CHOICES = ("auto", *METHODS, "none")
#: A threshold must keep at least this many out-of-fold predictions: fewer say nothing.
MIN_CALIBRATION = 5
#: Neighbours of each embedding in label spreading's graph.
NEIGHBOURS = 10
_SELF_TRAINING_ROUNDS = 1
Ints = NDArray[np.intp]


@dataclass
class PseudoLabels:
    """Rows of the unlabelled matrix given a label (class indices), and the threshold used
    (inf: none could be calibrated, so nothing was accepted)."""

    rows: Ints
    labels: Ints
    threshold: float

    @classmethod
    def none(cls, threshold: float = float("inf")) -> PseudoLabels:
        return cls(np.zeros(0, np.intp), np.zeros(0, np.intp), threshold)


@dataclass
class Candidate:
    """One method's cross-validated result on the labelled rows."""

    method: str
    accuracy: float
    """Accuracy of the head refitted with its pseudo-labels, on the held-out labelled rows."""
    checked: int = 0
    """Held-out labelled rows (labels hidden) the method pseudo-labelled."""
    correct: int = 0
    """Of those, how many it labelled right."""
    oof_proba: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    """Out-of-fold probabilities of the labelled rows (columns: class indices)."""

    @property
    def pseudo_accuracy(self) -> float | None:
        return self.correct / self.checked if self.checked else None


@dataclass
class Selection:
    """What :func:`select` chose, the candidates' CV results and the chosen pseudo-labels."""

    chosen: str
    pseudo: PseudoLabels
    candidates: list[Candidate]
    folds: int
    reason: str

    @property
    def best(self) -> Candidate | None:
        return next((c for c in self.candidates if c.method == self.chosen), None)


def calibrated_threshold(
    confidence: NDArray[Any], correct: NDArray[Any], precision: float
) -> float:
    """The lowest confidence ``t`` such that the predictions with confidence >= ``t`` (at
    least :data:`MIN_CALIBRATION` of them) are right at least ``precision`` of the time; inf
    when no ``t`` is."""
    conf = np.asarray(confidence, dtype=np.float64)
    order = np.argsort(-conf, kind="stable")
    conf, hits = conf[order], np.asarray(correct, dtype=np.float64)[order]
    n = np.arange(1, len(conf) + 1)
    reached = np.cumsum(hits) / n >= precision
    boundary = np.append(conf[1:] < conf[:-1], True)  # cut only between distinct values
    ok = np.flatnonzero(reached & boundary & (n >= MIN_CALIBRATION))
    return float(conf[ok[-1]]) if ok.size else float("inf")


def _self_training(X: NDArray[Any], y: Ints, precision: float, seed: int) -> PseudoLabels:
    known = np.flatnonzero(y >= 0)
    base = LogisticHead(random_state=seed).fit(X[known], y[known])
    oof = base.oof_proba_
    if oof is None:
        return PseudoLabels.none()
    hits = oof.argmax(axis=1) == y[known]
    threshold = calibrated_threshold(oof.max(axis=1), hits, precision)
    if not np.isfinite(threshold):
        return PseudoLabels.none()
    # scikit-learn accepts rows strictly above its threshold, which must lie in [0, 1); the
    # refits keep the C chosen on the labelled rows, with a looser tolerance (ranking rows by
    # confidence needs no tight optimum)
    strict = float(np.nextafter(min(threshold, 1.0), 0.0))
    model = SelfTrainingClassifier(
        LogisticHead(Cs=[base.C_], tol=1e-3, max_iter=200, random_state=seed),
        threshold=strict,
        max_iter=_SELF_TRAINING_ROUNDS,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "all unlabelled rows were labelled"
        model.fit(X, y)
    given = np.asarray(model.transduction_, dtype=np.intp)
    rows = np.flatnonzero((y < 0) & (given >= 0))
    return PseudoLabels(rows, given[rows], threshold)


def knn_graph(X: NDArray[Any]) -> Any:
    """The symmetric-to-be k-nearest-neighbour connectivity graph of the L2-normalised rows
    (cosine neighbours), as label spreading builds it; computed once per :func:`select`."""
    Z = np.asarray(X, dtype=np.float64)
    Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
    k = min(NEIGHBOURS, len(Z) - 1)
    return NearestNeighbors(n_neighbors=k).fit(Z).kneighbors_graph(Z, k, mode="connectivity")


def _spread(graph: Any, y: Ints, n_classes: int) -> tuple[NDArray[Any], Ints]:
    """Each row's spread confidence and class (class indices; confidence 0 for a row the
    labels never reached)."""
    # the graph is given as the kernel: scikit-learn's own knn kernel, computed only once
    model = LabelSpreading(kernel=lambda _a, _b: graph, max_iter=100)
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore")  # convergence, and rows the labels never reached
        model.fit(np.zeros((len(y), 1)), y)
    dist = np.zeros((len(y), n_classes))
    dist[:, model.classes_] = np.nan_to_num(np.asarray(model.label_distributions_))
    return dist.max(axis=1), np.asarray(dist.argmax(axis=1), dtype=np.intp)


def _label_spreading(
    X: NDArray[Any], y: Ints, precision: float, seed: int, graph: Any
) -> PseudoLabels:
    graph = knn_graph(X) if graph is None else graph
    known = np.flatnonzero(y >= 0)
    n_classes = int(y.max()) + 1
    folds = min(3, int(np.bincount(y[known]).min()))
    if folds < 2:
        return PseudoLabels.none()
    conf, hits = [], []
    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    for _, test in splitter.split(known, y[known]):
        hidden = y.copy()
        hidden[known[test]] = -1
        c, pred = _spread(graph, hidden, n_classes)
        conf.append(c[known[test]])
        hits.append(pred[known[test]] == y[known[test]])
    threshold = calibrated_threshold(np.concatenate(conf), np.concatenate(hits), precision)
    if not np.isfinite(threshold):
        return PseudoLabels.none()
    c, pred = _spread(graph, y, n_classes)
    rows = np.flatnonzero((y < 0) & (c >= threshold))
    return PseudoLabels(rows, pred[rows], threshold)


def pseudo_label(
    method: str,
    X: NDArray[Any],
    y: Ints,
    *,
    precision: float,
    seed: int = 0,
    graph: Any = None,
) -> PseudoLabels:
    """Pseudo-labels of the rows of ``X`` whose ``y`` is -1, by ``method`` (:data:`METHODS`,
    or ``none``), learnt from the others (``y``: class indices; module docstring).
    ``graph``: label spreading's :func:`knn_graph` of ``X`` when already computed."""
    y = np.asarray(y, dtype=np.intp)
    if method == "none" or not np.any(y < 0):
        return PseudoLabels.none()
    if method == "self_training":
        return _self_training(X, y, precision, seed)
    if method == "label_spreading":
        return _label_spreading(X, y, precision, seed, graph)
    raise ConfigError(f"unknown semi-supervised method {method!r}; valid: {', '.join(CHOICES)}")


def _score(
    method: str,
    head: Any,
    X: NDArray[Any],
    y_l: Ints,
    splits: list[tuple[Ints, Ints]],
    precision: float,
    seed: int,
    graph: Any,
) -> Candidate:
    """``method`` cross-validated (module docstring) on ``X`` (the labelled rows, labels
    ``y_l``, then the unlabelled ones): the refitted head's out-of-fold probabilities, and its
    pseudo-labels of the held-out labelled rows checked."""
    n_l, n_classes = len(y_l), int(y_l.max()) + 1
    oof = np.zeros((n_l, n_classes))
    checked = correct = 0
    for train, test in splits:
        y = np.full(len(X), -1, dtype=np.intp)
        y[train] = y_l[train]
        p = pseudo_label(method, X, y, precision=precision, seed=seed, graph=graph)
        held = p.rows < n_l
        checked += int(np.sum(held))
        correct += int(np.sum(p.labels[held] == y_l[p.rows[held]]))
        extra = p.rows[~held]  # only unlabelled rows train the head: test rows stay unseen
        fitted = clone(head).fit(
            np.vstack([X[train], X[extra]]), np.concatenate([y_l[train], p.labels[~held]])
        )
        classes = np.asarray(fitted.classes_, dtype=np.intp)
        oof[np.ix_(test, classes)] = fitted.predict_proba(X[test])
    accuracy = float(np.mean(oof.argmax(axis=1) == y_l))
    return Candidate(method, accuracy, checked, correct, oof)


def select(
    head: Any,
    X_l: NDArray[Any],
    y_l: Ints,
    X_u: NDArray[Any],
    *,
    method: str = "auto",
    precision: float = 0.95,
    folds: int = 3,
    seed: int = 0,
) -> Selection:
    """Cross-validate ``none`` and the semi-supervised methods (``method="auto"``: both; else
    that one) with the unfitted ``head`` on the labelled rows (class indices ``y_l``, every
    class present), keep the best (ties: the simpler, ``none`` first) and pseudo-label
    ``X_u`` with it."""
    if method not in CHOICES:
        raise ConfigError(f"unknown head.semi_supervised {method!r}; valid: {', '.join(CHOICES)}")
    methods = ("none", *METHODS) if method == "auto" else tuple(dict.fromkeys(("none", method)))
    y_l = np.asarray(y_l, dtype=np.intp)
    k = min(folds, int(np.bincount(y_l).min()))
    if k < 2:
        chosen = "none" if method == "auto" else method
        why = "too few labelled images per class to cross-validate"
        pseudo = _final(chosen, X_l, y_l, X_u, precision, seed, None)
        return Selection(chosen, pseudo, [], 0, f"{chosen}: {why}")
    splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(X_l, y_l))
    X = np.vstack([X_l, X_u])
    graph = knn_graph(X) if "label_spreading" in methods else None
    candidates = [_score(m, head, X, y_l, splits, precision, seed, graph) for m in methods]
    if method == "auto":
        best = max(candidates, key=lambda c: c.accuracy)  # max keeps the first of equals
        chosen = best.method
    else:
        chosen = method
    scores = ", ".join(f"{c.method} {c.accuracy:.3f}" for c in candidates)
    verb = "chosen" if method == "auto" else "asked for"
    reason = f"{chosen} {verb}; {k}-fold CV accuracy on the labelled training images: {scores}"
    pseudo = _final(chosen, X_l, y_l, X_u, precision, seed, graph)
    return Selection(chosen, pseudo, candidates, k, reason)


def _final(
    method: str,
    X_l: NDArray[Any],
    y_l: Ints,
    X_u: NDArray[Any],
    precision: float,
    seed: int,
    graph: Any,
) -> PseudoLabels:
    """``method``'s pseudo-labels of ``X_u`` (rows of ``X_u``) from every labelled row."""
    y = np.concatenate([y_l, np.full(len(X_u), -1, dtype=np.intp)])
    X = np.vstack([X_l, X_u])
    p = pseudo_label(method, X, y, precision=precision, seed=seed, graph=graph)
    return PseudoLabels(p.rows - len(y_l), p.labels, p.threshold)
