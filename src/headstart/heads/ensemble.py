"""Ensembles of heads: each member reads a column slice of the features and the members'
probabilities are combined by a weighted vote, greedy ensemble selection or a stacker.

Members may come from different backbones: the model concatenates their embeddings, and member
``i`` reads columns ``[start_i, stop_i)``.  Build one from fitted members with
:meth:`EnsembleHead.of`, or let :meth:`EnsembleHead.fit` fit the members and learn the
combination from out-of-fold probabilities (:mod:`headstart.heads.oof`).

Methods:

- ``"vote"``: soft voting, the weighted mean of the members' probabilities (equal weights by
  default).
- ``"hard"``: hard voting, each member's argmax is one (weighted) vote; the probability is
  ``(1 - TIE_BREAK) x vote share + TIE_BREAK x soft mean``, so the soft mean only decides
  between classes whose vote shares differ by less than :data:`TIE_BREAK` (ties).
- ``"select"``: Caruana et al. (2004) greedy selection with replacement sets the weights
  (:func:`~headstart.heads.oof.greedy_selection`); predicts like ``"vote"``.
- ``"stack"``: a logistic meta-learner on the members' clipped log-probabilities
  (:func:`~headstart.heads.oof.fit_stacker`).

Multi-class only: a multi-label member is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone

from headstart import errors
from headstart.heads._base import (
    Head,
    encode_labels,
    ensure_fitted,
    validate_predict_input,
    validate_training_data,
)
from headstart.heads.multilabel import MultiLabelHead
from headstart.heads.oof import (
    fit_stacker,
    greedy_selection,
    out_of_fold_proba,
    refit_factory,
    stack_features,
)

__all__ = ["METHODS", "TIE_BREAK", "EnsembleHead"]

#: The ways members' probabilities are combined (see the module docstring).
METHODS: tuple[str, ...] = ("vote", "hard", "select", "stack")
#: Weight of the soft mean in a hard vote's probability: breaks ties between vote shares.
TIE_BREAK = 1e-3

Method = Literal["vote", "hard", "select", "stack"]
Member = tuple[int, int, Any]


class EnsembleHead(Head):
    """A fitted combination of member heads, each on a column slice ``[start, stop)`` of X.

    Parameters
    ----------
    members:
        ``(start, stop, head)`` per member; :meth:`fit` fits a clone of each head on its slice.
    method:
        One of :data:`METHODS`.
    weights:
        Member weights for ``"vote"`` and ``"hard"`` (default equal; normalised to sum 1).
    rounds, metric:
        Greedy selection's rounds and metric (``"select"``).
    n_folds, random_state:
        Folds and seed of the out-of-fold probabilities ``"select"`` and ``"stack"`` learn from.

    Fitted: ``members_`` (heads), ``slices_`` (M, 2), ``weights_`` (M,) summing to 1 (equal
    and unused for ``"stack"``), ``meta_`` (the stacker, or None), ``oof_probas_`` (:meth:`fit`
    of select/stack; not exported).
    """

    kind: ClassVar[str] = "ensemble"

    members_: list[Any]
    slices_: NDArray[np.int64]
    weights_: NDArray[np.float64]
    meta_: Any

    def __init__(
        self,
        members: Sequence[Member] = (),
        method: Method = "vote",
        weights: Sequence[float] | None = None,
        rounds: int = 25,
        metric: Literal["log_loss", "accuracy"] = "log_loss",
        n_folds: int = 5,
        random_state: int | None = 0,
    ) -> None:
        self.members = members
        self.method = method
        self.weights = weights
        self.rounds = rounds
        self.metric = metric
        self.n_folds = n_folds
        self.random_state = random_state

    @classmethod
    def of(
        cls,
        members: Sequence[Member],
        method: Method,
        weights: Sequence[float] | None = None,
        meta: Any = None,
        *,
        n_features: int | None = None,
    ) -> EnsembleHead:
        """An ensemble of already fitted ``members`` (``(start, stop, head)``), combined by
        ``method``: ``"select"`` needs ``weights`` (from
        :func:`~headstart.heads.oof.greedy_selection`), ``"stack"`` needs ``meta`` (from
        :func:`~headstart.heads.oof.fit_stacker`).  ``n_features``: the width of the
        concatenated features it will be given (default: the largest ``stop``).  Raises a
        one-line :class:`~headstart.errors.ConfigError` for members whose classes differ.
        """
        head = cls(members=list(members), method=method, weights=weights)
        head._check_method()
        checked = _check_members(head.members, fitted=True)
        head.classes_ = _same_classes([h for _, _, h in checked])
        if method == "select" and weights is None:
            raise errors.ConfigError("method 'select' needs weights from greedy_selection")
        if method == "stack":
            _check_meta(meta, len(checked), head.classes_)
        elif meta is not None:
            raise errors.ConfigError(f"a meta head is only for method 'stack'; got {method!r}")
        widest = max(stop for _, stop, _ in checked)
        if n_features is None:
            n_features = widest
        if not isinstance(n_features, int | np.integer) or n_features < widest:
            raise errors.ConfigError(
                f"n_features must be an integer >= {widest} (the widest slice); got {n_features!r}"
            )
        head.n_features_in_ = int(n_features)
        head._set_state(checked, weights, meta)
        return head

    def fit(self, X: Any, y: Any) -> EnsembleHead:
        """Fit a clone of every member on its slice, then the combination: for ``"select"``
        and ``"stack"`` from the members' out-of-fold probabilities (never in-sample ones).
        Returns ``self``."""
        self._check_method()
        specs = _check_members(self.members, fitted=False)
        X_arr, y_arr = validate_training_data(self, X, y)
        widest = max(stop for _, stop, _ in specs)
        if widest > X_arr.shape[1]:
            raise errors.ConfigError(
                f"a member reads columns up to {widest} but X has {X_arr.shape[1]}"
            )
        self.classes_, _ = encode_labels(y_arr)
        fitted = [(a, b, clone(h).fit(X_arr[:, a:b], y_arr)) for a, b, h in specs]
        weights: Any = self.weights
        meta = None
        if self.method in ("select", "stack"):
            self.oof_probas_ = [
                out_of_fold_proba(
                    refit_factory(h),
                    X_arr[:, a:b],
                    y_arr,
                    n_folds=self.n_folds,
                    seed=self.random_state,
                )
                for a, b, h in fitted
            ]
            if self.method == "select":
                weights = greedy_selection(
                    self.oof_probas_,
                    y_arr,
                    rounds=self.rounds,
                    metric=self.metric,
                    classes=list(self.classes_),
                )
            else:
                meta = fit_stacker(self.oof_probas_, y_arr, random_state=self.random_state)
        self._set_state(fitted, weights, meta)
        return self

    def member_probas(self, X: Any) -> list[NDArray[np.float64]]:
        """Each member's probabilities on its slice of ``X``, columns follow ``classes_``."""
        X_arr = validate_predict_input(self, X)
        return [
            np.asarray(head.predict_proba(X_arr[:, a:b]), dtype=np.float64)
            for (a, b), head in zip(self.slices_.tolist(), self.members_, strict=True)
        ]

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """The combined probabilities (see the module docstring), columns follow ``classes_``."""
        probas = self.member_probas(X)
        if self.method == "stack":
            stacked: NDArray[np.float64] = self.meta_.predict_proba(stack_features(probas))
            return stacked
        soft = sum(w * p for w, p in zip(self.weights_, probas, strict=True))
        soft_arr = np.asarray(soft, dtype=np.float64)
        if self.method != "hard":
            return soft_arr
        eye = np.eye(len(self.classes_))
        votes = sum(
            w * eye[np.argmax(p, axis=1)] for w, p in zip(self.weights_, probas, strict=True)
        )
        proba: NDArray[np.float64] = (1.0 - TIE_BREAK) * np.asarray(votes) + TIE_BREAK * soft_arr
        return proba

    def restore_members(self, members: Sequence[Member], weights: Any, meta: Any) -> None:
        """Set the fitted state from imported parts (the weights as stored, not renormalised,
        so predictions are bit-identical); a one-line ConfigError when they do not fit."""
        self._check_method()
        checked = _check_members(members, fitted=True)
        classes = _same_classes([h for _, _, h in checked])
        if list(classes) != list(self.classes_):
            raise errors.ConfigError(
                f"ensemble members predict {classes.tolist()!r}, not {self.classes_.tolist()!r}"
            )
        if self.method == "stack":
            _check_meta(meta, len(checked), classes)
        self._set_state(checked, weights, meta)
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if w.shape == self.weights_.shape:
            self.weights_ = w

    def _check_method(self) -> None:
        if self.method not in METHODS:
            raise errors.ConfigError(
                f"unknown ensemble method {self.method!r}; known: {', '.join(METHODS)}"
            )

    def _set_state(self, members: Sequence[Member], weights: Any, meta: Any) -> None:
        self.members_ = [head for _, _, head in members]
        self.slices_ = np.asarray([[a, b] for a, b, _ in members], dtype=np.int64)
        self.weights_ = _normalised(weights, len(members))
        self.meta_ = meta

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "members_")


def _normalised(weights: Any, n_members: int) -> NDArray[np.float64]:
    if weights is None:
        return np.full(n_members, 1.0 / n_members)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (n_members,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise errors.ConfigError(
            f"weights must be {n_members} finite numbers >= 0, not all 0; got {list(weights)!r}"
        )
    normalised: NDArray[np.float64] = w / w.sum()
    return normalised


def _check_members(members: Any, *, fitted: bool) -> list[Member]:
    """The members as (start, stop, head); one-line ConfigError for a malformed entry."""
    if not isinstance(members, Sequence) or len(members) == 0:
        raise errors.ConfigError("an ensemble needs one or more (start, stop, head) members")
    checked = []
    for i, member in enumerate(members):
        if not isinstance(member, tuple | list) or len(member) != 3:
            raise errors.ConfigError(f"ensemble member {i} is not (start, stop, head): {member!r}")
        start, stop, head = member
        ints = all(isinstance(v, int | np.integer) for v in (start, stop))
        if not ints or not 0 <= start < stop:
            raise errors.ConfigError(
                f"ensemble member {i} needs integer columns 0 <= start < stop; got {start!r}, "
                f"{stop!r}"
            )
        if isinstance(head, MultiLabelHead):
            raise errors.ConfigError(
                f"ensemble member {i} is multi-label; ensembles of multi-label tasks are not "
                "supported"
            )
        if fitted:
            ensure_fitted(head)
            if head.n_features_in_ != stop - start:
                raise errors.ConfigError(
                    f"ensemble member {i} was fitted on {head.n_features_in_} features but "
                    f"reads columns [{start}, {stop}) ({stop - start})"
                )
        checked.append((int(start), int(stop), head))
    return checked


def _same_classes(heads: Sequence[Any]) -> NDArray[Any]:
    first = np.asarray(heads[0].classes_).tolist()
    for i, head in enumerate(heads[1:], start=1):
        if np.asarray(head.classes_).tolist() != first:
            raise errors.ConfigError(
                f"ensemble members disagree on classes: member {i} has "
                f"{np.asarray(head.classes_).tolist()!r}, member 0 has {first!r}"
            )
    return np.asarray(heads[0].classes_)


def _check_meta(meta: Any, n_members: int, classes: NDArray[Any]) -> None:
    if meta is None:
        raise errors.ConfigError("method 'stack' needs a meta head from fit_stacker")
    ensure_fitted(meta)
    width = n_members * len(classes)
    if meta.n_features_in_ != width or list(meta.classes_) != list(classes):
        raise errors.ConfigError(
            f"the meta head must read {width} stack features (members x classes) and predict "
            f"the members' classes {classes.tolist()!r}"
        )
