"""The default head: standardised features, multinomial logistic regression, ``C`` chosen by CV.

``C`` is picked on a small log-spaced grid by stratified k-fold CV on the training data, walking
the grid from strong to weak regularisation with warm starts and stopping once the CV score has
clearly peaked, then the model is refitted on all data at the best ``C``.  That keeps a fit on
3,000 x 1,280 embeddings with 10 classes to a few seconds on two cores.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits

from headstart import errors
from headstart.heads._base import (
    FloatArray,
    Head,
    check_class_weight,
    class_weight_by_index,
    encode_labels,
    fit_standardiser,
    probabilities_from_scores,
    standardise,
    validate_predict_input,
    validate_training_data,
)

__all__ = ["DEFAULT_CS", "LogisticHead"]

#: The default grid of inverse regularisation strengths (half-decade steps), for standardised
#: features; embeddings of a few thousand images usually peak between 1e-3 and 1e-1.
DEFAULT_CS: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
#: Stop walking the grid after this many values of ``C`` without a better CV score.
_PATIENCE = 2
#: Looser tolerance while searching: ranking values of ``C`` does not need a tight optimum.
_SEARCH_TOL = 1e-3


class LogisticHead(Head):
    """Standardise, then multinomial logistic regression (lbfgs) with ``C`` chosen by CV.

    Fitted ``oof_proba_``: the out-of-fold probabilities of the training rows at the chosen
    ``C`` (columns follow ``classes_``; None when the search was skipped): a validation estimate
    that costs no extra fit.  It is not part of the exported state.

    Parameters
    ----------
    Cs:
        Grid of inverse L2 regularisation strengths searched in increasing order; ``None`` uses
        :data:`DEFAULT_CS`.  A single value skips the search.
    cv:
        Number of stratified folds; reduced automatically to the size of the smallest class
        (with a single sample in some class the search is skipped and the grid's middle is used).
    class_weight:
        ``None``, ``"balanced"`` (weights inversely proportional to class frequency) or a
        mapping from class label to weight.  The CV score is then the accordingly weighted
        accuracy (balanced accuracy for ``"balanced"``).
    max_iter, tol:
        lbfgs limits for the final fit.
    random_state:
        Seed of the fold shuffling.
    """

    kind: ClassVar[str] = "logistic"
    _array_attrs: ClassVar[tuple[str, ...]] = ("mean", "scale", "coef", "intercept")

    def __init__(
        self,
        Cs: Sequence[float] | None = None,
        cv: int = 3,
        class_weight: Mapping[Any, float] | Literal["balanced"] | None = None,
        max_iter: int = 500,
        tol: float = 1e-4,
        random_state: int | None = 0,
    ) -> None:
        self.Cs = Cs
        self.cv = cv
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> LogisticHead:
        """Fit on features ``X`` (n_samples, n_features) and labels ``y``; returns ``self``."""
        X_arr, y_arr = validate_training_data(self, X, y)
        self.classes_, y_idx = encode_labels(y_arr)
        grid = self._grid()
        self._weights_by_index = class_weight_by_index(self.class_weight, self.classes_)
        self.mean_, self.scale_ = fit_standardiser(X_arr)
        Z = standardise(X_arr, self.mean_, self.scale_)
        # The loss mixes OpenMP (sklearn) and BLAS threads; on a few cores they fight over them
        # and small matrix products get 5-20x slower.  One BLAS thread is fastest here.
        with threadpool_limits(limits=1, user_api="blas"):
            self.cv_scores_, best = self._search(Z, y_idx, grid)
            self.C_ = float(grid[len(grid) // 2 if best is None else best])
            model = self._model(self.C_, self.tol, self.max_iter).fit(Z, y_idx)
        self.coef_ = model.coef_
        self.intercept_ = model.intercept_
        self.n_iter_ = int(np.max(model.n_iter_))
        return self

    def decision_function(self, X: Any) -> FloatArray:
        """Linear scores: shape (n,) for two classes (positive = ``classes_[1]``), else (n, k)."""
        X_arr = validate_predict_input(self, X)
        Z = standardise(X_arr, self.mean_, self.scale_)
        scores: FloatArray = Z @ self.coef_.T + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Class probabilities, columns in the order of ``classes_``."""
        return probabilities_from_scores(self.decision_function(X))

    def export_extra(self) -> dict[str, Any]:
        """The chosen ``C`` and the CV score of each grid value (``None`` where not tried)."""
        scores = [None if not np.isfinite(s) else float(s) for s in self.cv_scores_]
        return {"C": self.C_, "cv_scores": scores, "n_iter": self.n_iter_}

    def restore_state(self, arrays: Any, extra: Any) -> None:
        """Set fitted attributes from exported state."""
        super().restore_state(arrays, extra)
        self.C_ = float(extra.get("C", float("nan")))
        scores = extra.get("cv_scores") or []
        self.cv_scores_ = np.array([np.nan if s is None else s for s in scores], dtype=np.float64)
        self.n_iter_ = int(extra.get("n_iter", 0))

    def _grid(self) -> NDArray[np.float64]:
        grid = np.asarray(DEFAULT_CS if self.Cs is None else self.Cs, dtype=np.float64).ravel()
        if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
            raise errors.ConfigError(f"Cs must be positive finite numbers; got {self.Cs!r}")
        check_class_weight(self.class_weight)
        if not isinstance(self.cv, int | np.integer) or self.cv < 2:
            raise errors.ConfigError(f"cv must be an integer >= 2; got {self.cv!r}")
        return np.unique(grid)

    def _model(self, C: float, tol: float, max_iter: int) -> LogisticRegression:
        return LogisticRegression(
            C=C, class_weight=self._weights_by_index, tol=tol, max_iter=max_iter, warm_start=True
        )

    def _search(
        self, Z: FloatArray, y_idx: NDArray[np.intp], grid: NDArray[np.float64]
    ) -> tuple[NDArray[np.float64], int | None]:
        """Mean CV score per grid value (NaN where skipped) and the best value's index.

        The score is accuracy; ties (common on small folds) go to the lower log-loss, which
        keeps tiny data sets from always landing on the strongest regularisation.
        """
        scores = np.full(grid.size, np.nan)
        self.oof_proba_: NDArray[np.float64] | None = None
        n_splits = min(self.cv, int(np.bincount(y_idx).min()))
        if grid.size == 1 or n_splits < 2:
            return scores, None
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)
        splits = list(folds.split(Z, y_idx))
        models = [self._model(float(grid[0]), _SEARCH_TOL, 200) for _ in splits]
        best: tuple[float, float] = (-np.inf, -np.inf)
        best_index, since_best = 0, 0
        for i, C in enumerate(grid):
            fold_scores = []
            oof = np.zeros((len(y_idx), int(y_idx.max()) + 1))
            for model, (train, test) in zip(models, splits, strict=True):
                model.set_params(C=float(C))
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model.fit(Z[train], y_idx[train])
                oof[np.ix_(test, model.classes_)] = model.predict_proba(Z[test])
                fold_scores.append(self._score(oof[test], y_idx[test]))
            accuracy, neg_log_loss = np.mean(fold_scores, axis=0)
            scores[i] = accuracy
            key = (round(float(accuracy), 10), float(neg_log_loss))
            if key > best:
                best, best_index, since_best = key, i, 0
                self.oof_proba_ = oof
            else:
                since_best += 1
                if since_best >= _PATIENCE:
                    break
        return scores, best_index

    def _score(self, proba: NDArray[Any], true: NDArray[np.intp]) -> tuple[float, float]:
        """Accuracy and negative log-loss, weighted like the training loss.

        With ``class_weight="balanced"`` the accuracy is balanced accuracy.
        """
        weight = np.ones(len(true))
        if self._weights_by_index is not None:
            weight = compute_sample_weight(self._weights_by_index, true)
        total = max(float(np.sum(weight)), 1e-300)
        hit = np.argmax(proba, axis=1) == true
        likelihood = np.clip(proba[np.arange(len(true)), true], 1e-15, 1.0)
        accuracy = float(np.sum(weight * hit)) / total
        return accuracy, float(np.sum(weight * np.log(likelihood))) / total
