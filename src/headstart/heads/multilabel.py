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
from sklearn.utils.multiclass import check_classification_targets
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
    ``thresholds_`` (L,), ``classes_`` (``arange(L)``: the columns), ``n_features_in_``, and
    ``oof_proba_`` (n, L) when every label's head kept its out-of-fold probabilities.
    As :class:`~sklearn.multiclass.OneVsRestClassifier` does, a 1-D target is a single yes/no
    question answered like any binary classifier: ``classes_`` its two values, ``predict``
    1-D, ``predict_proba`` (n, 2).
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
        tags.classifier_tags.multi_class = False  # each column is a yes/no question
        tags.target_tags.multi_output = True  # and single output: a 1-D target is one label
        return tags

    def fit(self, X: Any, Y: Any) -> MultiLabelHead:
        """Fit one binary head per column of ``Y`` (n, L): a 0/1 indicator matrix (or any two
        values per column, the larger one meaning "has the label"; a 1-D ``Y`` is one column).
        Returns ``self``.  Every label needs training rows with and without it."""
        head_class(self.kind)  # an unknown kind fails before any work
        if not 0.0 < float(self.threshold) < 1.0:
            raise errors.ConfigError(f"threshold must be in (0, 1); got {self.threshold!r}")
        X_arr, Y_arr = validate_data(self, X, Y, multi_output=True, dtype=FLOAT_DTYPES)
        check_classification_targets(Y_arr)
        self.one_d_ = Y_arr.ndim == 1
        Y_arr = Y_arr.reshape(len(Y_arr), -1)
        heads = []
        for j in range(Y_arr.shape[1]):
            values = np.unique(Y_arr[:, j])
            if len(values) != 2:
                raise errors.DataError(
                    f"Only binary classification is supported. Label {j} has {len(values)} "
                    "class(es) in training; each label needs rows with and without it"
                )
            heads.append(create_head(self.kind, **dict(self.params or {})).fit(X_arr, Y_arr[:, j]))
        self.estimators_ = heads
        oofs = [oof for h in heads if (oof := getattr(h, "oof_proba_", None)) is not None]
        self.oof_proba_: NDArray[np.float64] | None = (
            np.column_stack([oof[:, 1] for oof in oofs]) if len(oofs) == len(heads) else None
        )
        self.classes_ = heads[0].classes_ if self.one_d_ else np.arange(Y_arr.shape[1])
        self.thresholds_ = np.full(Y_arr.shape[1], float(self.threshold))
        return self

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """(n, L) independent probabilities of each label (its larger value), rows need not
        sum to 1."""
        ensure_fitted(self)
        X_arr = validate_data(self, X, dtype=FLOAT_DTYPES, reset=False)
        columns = [head.predict_proba(X_arr)[:, 1] for head in self.estimators_]
        proba = np.column_stack(columns).astype(np.float64)
        return np.column_stack([1.0 - proba[:, 0], proba[:, 0]]) if self.one_d_ else proba

    def predict(self, X: Any) -> NDArray[Any]:
        """(n, L): each label's value (1 for an indicator matrix) where its probability is at or
        above its threshold, else its other value (0)."""
        proba = self.predict_proba(X)
        hit = (proba[:, 1:] if self.one_d_ else proba) >= self.thresholds_
        values = [head.classes_ for head in self.estimators_]
        out = np.column_stack([v[h.astype(int)] for v, h in zip(values, hit.T, strict=True)])
        return out[:, 0] if self.one_d_ else out

    def __sklearn_is_fitted__(self) -> bool:
        try:
            check_is_fitted(self, "estimators_")
        except Exception:  # sklearn's NotFittedError; keep this method's answer a bool
            return False
        return True


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
