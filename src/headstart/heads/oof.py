"""Out-of-fold probabilities and what is fitted on them: greedy ensemble selection and stacking.

Anything that learns how to combine heads must learn it from predictions the heads made on rows
they were not trained on, or it rewards memorisation: a 1-nearest-neighbour head is perfect on
its own training rows.  :func:`out_of_fold_proba` gives every training row a prediction from a
head fitted without it; :func:`greedy_selection` and :func:`fit_stacker` are meant to be fed
those (as :class:`~headstart.heads.ensemble.EnsembleHead.fit` does).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold

from headstart import errors
from headstart.heads._base import ensure_fitted
from headstart.heads.bagging import BaggedHead
from headstart.heads.logistic import LogisticHead

__all__ = [
    "STACK_FLOOR",
    "fit_stacker",
    "greedy_selection",
    "out_of_fold_proba",
    "refit_factory",
    "stack_features",
]

#: Probabilities are clipped here before the log in stack features (and in the torch module).
STACK_FLOOR = 1e-6
#: Clip for log loss in greedy selection: a confident miss costs ~35 nats, not infinity.
_LOSS_FLOOR = 1e-15


def _labels(y: Any) -> NDArray[Any]:
    y_arr = np.asarray(y)
    if y_arr.ndim != 1:
        raise errors.ConfigError(
            f"out-of-fold machinery needs one class label per row (multi-class); got y of shape "
            f"{y_arr.shape}"
        )
    return y_arr


def out_of_fold_proba(
    make_head: Callable[[], Any], X: Any, y: Any, *, n_folds: int = 5, seed: int | None = 0
) -> NDArray[np.float64]:
    """(n, C) probabilities of every row from a head fitted on the other folds.

    Stratified k-fold (shuffled with ``seed``); ``n_folds`` is reduced to the smallest class's
    row count, but never below 2.  Columns follow the sorted classes of ``y`` (the ``classes_``
    of a head fitted on all rows); a class missing from a fold's training part gets
    probability 0 in that fold's rows.  ``make_head`` returns a new unfitted head per fold
    (see :func:`refit_factory` to reuse fitted hyper-parameters).
    """
    y_arr = _labels(y)
    X_arr = np.asarray(X)
    if not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise errors.ConfigError(f"n_folds must be an integer >= 2; got {n_folds!r}")
    classes, y_idx = np.unique(y_arr, return_inverse=True)
    n_splits = max(2, min(int(n_folds), int(np.bincount(y_idx).min())))
    if len(y_arr) < n_splits:
        raise errors.DataError(f"out-of-fold predictions need >= {n_splits} rows; got {len(y_arr)}")
    folds = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    proba = np.zeros((len(y_arr), len(classes)))
    with warnings.catch_warnings():
        # "the least populated class has only 1 member": expected, that class is then unseen
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        splits = list(folds.split(X_arr, y_idx))
    for train, test in splits:
        head = make_head().fit(X_arr[train], y_arr[train])
        columns = np.searchsorted(classes, head.classes_)
        proba[np.ix_(test, columns)] = head.predict_proba(X_arr[test])
    return proba


def refit_factory(head: Any) -> Callable[[], Any]:
    """A factory of unfitted heads like the fitted ``head``, with its fitted hyper-parameters
    fixed so that refits (out-of-fold, replicas) skip their searches: a
    :class:`~headstart.heads.LogisticHead` gets ``Cs=(C_,)``, a
    :class:`~headstart.heads.BaggedHead` its members' fitted parameters, others their
    ``get_params()``."""
    ensure_fitted(head)
    fixed: dict[str, Any] = {}
    if isinstance(head, LogisticHead):
        fixed["Cs"] = (float(head.C_),)
    elif isinstance(head, BaggedHead):
        fixed["base_params"] = dict(head.base_params_)
    template = clone(head).set_params(**fixed)
    return lambda: clone(template)


def _indices(y: Any, n_classes: int, classes: Sequence[Any] | None) -> NDArray[np.intp]:
    y_arr = _labels(y)
    known = np.unique(y_arr) if classes is None else np.asarray(classes)
    if len(known) != n_classes:
        raise errors.ConfigError(
            f"probabilities have {n_classes} columns but there are {len(known)} classes"
        )
    index = {label: i for i, label in enumerate(known.tolist())}
    unknown = sorted({str(v) for v in y_arr.tolist() if v not in index})
    if unknown:
        raise errors.ConfigError(f"labels {unknown!r} are not among the classes {known.tolist()!r}")
    return np.asarray([index[v] for v in y_arr.tolist()], dtype=np.intp)


def _check_probas(probas: Sequence[NDArray[Any]]) -> list[NDArray[np.float64]]:
    arrays = [np.asarray(p, dtype=np.float64) for p in probas]
    if not arrays or any(p.ndim != 2 or p.shape != arrays[0].shape for p in arrays):
        shapes = [p.shape for p in arrays]
        raise errors.ConfigError(f"need one or more (n, C) probability arrays alike; got {shapes}")
    return arrays


def greedy_selection(
    probas: Sequence[NDArray[Any]],
    y: Any,
    *,
    rounds: int = 25,
    metric: Literal["log_loss", "accuracy"] = "log_loss",
    classes: Sequence[Any] | None = None,
) -> NDArray[np.float64]:
    """Member weights by greedy ensemble selection with replacement (Caruana et al., 2004).

    Start from the single best member; each further round adds the member (repeats allowed)
    whose inclusion gives the averaged probabilities the best ``metric`` on ``y``; the
    weights are the pick counts / ``rounds`` (they sum to 1).  A tie (common with accuracy)
    goes to the member that scores best alone, then to the lower index.
    Feed it out-of-fold probabilities (:func:`out_of_fold_proba`), never in-sample ones.

    ``metric``: ``"log_loss"`` (default) rather than accuracy: it is smooth, so a round on a
    few hundred rows is rarely a tie, and it rewards the calibrated probabilities that the
    model's thresholds and confidence read; accuracy only sees the argmax.  ``classes``: the
    column labels (default: the sorted labels of ``y``).
    """
    arrays = _check_probas(probas)
    if not isinstance(rounds, int | np.integer) or rounds < 1:
        raise errors.ConfigError(f"rounds must be an integer >= 1; got {rounds!r}")
    if metric not in ("log_loss", "accuracy"):
        raise errors.ConfigError(f"metric must be 'log_loss' or 'accuracy'; got {metric!r}")
    y_idx = _indices(y, arrays[0].shape[1], classes)
    rows = np.arange(len(y_idx))

    def loss(p: NDArray[np.float64]) -> float:
        if metric == "accuracy":
            return -float(np.mean(np.argmax(p, axis=1) == y_idx))
        return -float(np.mean(np.log(np.clip(p[rows, y_idx], _LOSS_FLOOR, 1.0))))

    counts = np.zeros(len(arrays), dtype=np.int64)
    total = np.zeros_like(arrays[0])
    alone = np.array([loss(p) for p in arrays])
    for picked in range(int(rounds)):
        scores = np.array([loss((total + p) / (picked + 1)) for p in arrays])
        tied = np.flatnonzero(scores <= scores.min() + 1e-12)
        best = int(tied[np.argmin(alone[tied])])
        counts[best] += 1
        total += arrays[best]
    weights: NDArray[np.float64] = counts / float(rounds)
    return weights


def stack_features(probas: Sequence[NDArray[Any]]) -> NDArray[np.float64]:
    """The stacker's input: members' log-probabilities (clipped at :data:`STACK_FLOOR`) side by
    side, (n, members x C)."""
    arrays = _check_probas(probas)
    logs = [np.log(np.clip(p, STACK_FLOOR, 1.0)) for p in arrays]
    return np.concatenate(logs, axis=1)


def fit_stacker(
    oof_probas: Sequence[NDArray[Any]], y: Any, *, random_state: int | None = 0
) -> LogisticHead:
    """The stacking meta-learner: a :class:`LogisticHead` (``C`` by its own CV) fitted on
    :func:`stack_features` of the members' **out-of-fold** probabilities and the labels ``y``.
    At prediction it reads the same features made from the members' ordinary probabilities."""
    features = stack_features(oof_probas)
    return LogisticHead(random_state=random_state).fit(features, _labels(y))
