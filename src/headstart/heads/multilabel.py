"""The multi-label head: one binary head per label, independent probabilities, a threshold each.

:class:`MultiLabelHead` is a scikit-learn classifier for an indicator matrix ``Y`` (n, L), in the
manner of :class:`~sklearn.multioutput.MultiOutputClassifier` (one estimator per column) and
:class:`~sklearn.model_selection.FixedThresholdClassifier` (a decision threshold on the positive
probability): each label gets a binary head of ``kind`` (so ``logistic`` keeps its CV-chosen
``C`` per label), ``predict_proba`` returns each label's positive-class probability, and
``predict`` compares them with ``thresholds_``, 0.5 until :func:`tune_thresholds` sets the
F1-best ones on held-out data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from headstart import errors
from headstart.heads._base import FLOAT_DTYPES, ensure_fitted
from headstart.heads.kinds import create_head, head_class

__all__ = ["MultiLabelHead", "tune_thresholds"]


class MultiLabelHead(ClassifierMixin, BaseEstimator):
    """One binary head of ``kind`` (with ``params``) per column of an indicator matrix.

    Parameters
    ----------
    kind, params:
        The head kind of every label (see :data:`headstart.heads.HEADS`) and its parameters.
    threshold:
        The decision threshold of every label until :func:`tune_thresholds` sets its own.

    Fitted attributes: ``estimators_`` (one binary head per label, classes 0/1),
    ``thresholds_`` (L,), ``classes_`` (``arange(L)``: the columns), ``n_features_in_``.
    """

    def __init__(
        self,
        kind: str = "logistic",
        params: Mapping[str, Any] | None = None,
        threshold: float = 0.5,
    ) -> None:
        self.kind = kind
        self.params = params
        self.threshold = threshold

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = False
        return tags

    def fit(self, X: Any, Y: Any) -> MultiLabelHead:
        """Fit one binary head per column of the 0/1 matrix ``Y`` (n, L); returns ``self``.

        Every label needs training rows with and without it."""
        head_class(self.kind)  # an unknown kind fails before any work
        if not 0.0 < float(self.threshold) < 1.0:
            raise errors.ConfigError(f"threshold must be in (0, 1); got {self.threshold!r}")
        X_arr, Y_arr = validate_data(self, X, Y, multi_output=True, dtype=FLOAT_DTYPES)
        Y_arr = _indicator(Y_arr)
        heads = []
        for j in range(Y_arr.shape[1]):
            column = Y_arr[:, j]
            if column.all() or not column.any():
                where = "every" if column.all() else "no"
                raise errors.DataError(
                    f"label {j} is on {where} training row; a multi-label head needs rows with "
                    "and without each label (at least 2 classes per label)"
                )
            heads.append(create_head(self.kind, **dict(self.params or {})).fit(X_arr, column))
        self.estimators_ = heads
        self.classes_ = np.arange(Y_arr.shape[1])
        self.thresholds_ = np.full(Y_arr.shape[1], float(self.threshold))
        return self

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """(n, L) independent probabilities, one column per label (rows need not sum to 1)."""
        ensure_fitted(self)
        X_arr = validate_data(self, X, dtype=FLOAT_DTYPES, reset=False)
        columns = [
            head.predict_proba(X_arr)[:, list(head.classes_).index(1)] for head in self.estimators_
        ]
        return np.column_stack(columns).astype(np.float64)

    def predict(self, X: Any) -> NDArray[np.int64]:
        """(n, L) 0/1: each label's probability at or above its threshold."""
        return (self.predict_proba(X) >= self.thresholds_).astype(np.int64)

    def __sklearn_is_fitted__(self) -> bool:
        try:
            check_is_fitted(self, "estimators_")
        except Exception:  # sklearn's NotFittedError; keep this method's answer a bool
            return False
        return True


def _indicator(Y: NDArray[Any]) -> NDArray[np.int8]:
    """``Y`` as an (n, L) 0/1 matrix, or a one-line error saying what it is instead."""
    if Y.ndim != 2 or Y.shape[1] < 1:
        raise errors.DataError(
            f"a multi-label head needs an (n, labels) 0/1 indicator matrix; got shape {Y.shape}"
        )
    values = np.unique(Y)
    if not np.isin(values, (0, 1)).all():
        raise errors.DataError(
            f"a multi-label head needs 0/1 targets; got values {values[:5].tolist()}"
        )
    return Y.astype(np.int8)


def tune_thresholds(Y: NDArray[Any], P: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per label, the probability threshold with the best F1 on (Y, P); 0.5 for a label with
    no positive row (nothing to tune on).  The threshold is the midpoint between the lowest
    score kept positive and the next lower score, so it generalises a little better than the
    score itself."""
    thresholds = np.full(P.shape[1], 0.5)
    for j in range(P.shape[1]):
        y, p = Y[:, j].astype(bool), P[:, j]
        if not y.any():
            continue
        order = np.argsort(-p, kind="stable")
        ps, ys = p[order], y[order]
        ends = np.flatnonzero(np.r_[ps[1:] != ps[:-1], True])  # last index of each tie group
        tp = np.cumsum(ys)[ends]
        fp = ends + 1 - tp
        f1 = 2 * tp / (2 * tp + fp + (y.sum() - tp))
        best = int(np.argmax(f1))
        below = ps[ends[best] + 1] if ends[best] + 1 < len(ps) else 0.0
        thresholds[j] = float((ps[ends[best]] + below) / 2)
    return thresholds
