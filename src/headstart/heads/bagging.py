"""Bagging: the mean probability of heads fitted on stratified bootstrap replicas.

Every replica draws, class by class, ``max_samples`` x (the class's row count) rows with
replacement (at least one), so every replica sees every class and all replicas share the
bagged head's ``classes_``; their probability columns line up without remapping.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from headstart import errors
from headstart.heads._base import (
    Head,
    encode_labels,
    validate_predict_input,
    validate_training_data,
)

__all__ = ["BaggedHead", "stratified_bootstrap"]


def stratified_bootstrap(
    y_idx: NDArray[np.intp], fraction: float, rng: np.random.Generator
) -> NDArray[np.intp]:
    """Row indices of one bootstrap replica: per class, ``round(fraction * count)`` (at least
    one) rows drawn with replacement from that class's rows, sorted."""
    picks = []
    for c in range(int(y_idx.max()) + 1):
        rows = np.flatnonzero(y_idx == c)
        size = max(1, round(fraction * len(rows)))
        picks.append(rng.choice(rows, size=size, replace=True))
    return np.sort(np.concatenate(picks))


class BaggedHead(Head):
    """Mean of ``n_estimators`` heads of kind ``base`` fitted on stratified bootstrap replicas.

    Parameters
    ----------
    base, base_params:
        The members' head kind (any of :data:`~headstart.heads.HEADS` but ``"bagging"``) and
        its parameters.  For ``"logistic"`` without a single fixed ``Cs``, ``C`` is chosen once
        by CV on the full training data and every replica reuses it: a replica's duplicated
        rows would fall on both sides of its own CV folds and favour too weak a penalty (and
        one search is ``n_estimators`` times cheaper).
    n_estimators:
        Number of replicas.
    max_samples:
        Replica size as a share of each class's rows, in (0, 1].
    random_state:
        Seed of the bootstrap draws (members get their own derived seeds).

    Fitted: ``estimators_``, ``base_params_`` (the parameters the replicas were fitted with,
    ``C`` fixed for logistic) and ``samples_`` (each replica's row indices; not exported).
    """

    kind: ClassVar[str] = "bagging"

    def __init__(
        self,
        base: str = "logistic",
        base_params: Mapping[str, Any] | None = None,
        n_estimators: int = 10,
        max_samples: float = 1.0,
        random_state: int | None = 0,
    ) -> None:
        self.base = base
        self.base_params = base_params
        self.n_estimators = n_estimators
        self.max_samples = max_samples
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> BaggedHead:
        """Fit ``n_estimators`` base heads on stratified bootstrap replicas; returns ``self``."""
        params = self._check_params()
        X_arr, y_arr = validate_training_data(self, X, y)
        self.classes_, y_idx = encode_labels(y_arr)
        params = self._fixed_c(params, X_arr, y_arr)
        rng = np.random.default_rng(self.random_state)
        self.estimators_: list[Any] = []
        self.samples_: list[NDArray[np.intp]] = []
        for _ in range(int(self.n_estimators)):
            rows = stratified_bootstrap(y_idx, float(self.max_samples), rng)
            member = _create(self.base, params)
            if "random_state" in member.get_params():
                # distinct seeds, else seeded members (mlp, boosting) shrink their diversity
                member.set_params(random_state=int(rng.integers(2**31 - 1)))
            self.estimators_.append(member.fit(X_arr[rows], y_arr[rows]))
            self.samples_.append(rows)
        self.base_params_ = params
        return self

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Mean of the replicas' probabilities; columns follow ``classes_``."""
        X_arr = validate_predict_input(self, X)
        total = np.zeros((len(X_arr), len(self.classes_)))
        for member in self.estimators_:
            total += member.predict_proba(X_arr)
        proba: NDArray[np.float64] = total / len(self.estimators_)
        return proba

    def _check_params(self) -> dict[str, Any]:
        from headstart.heads.kinds import HEADS  # kinds registers this class: import when used

        if self.base == self.kind or self.base not in HEADS:
            valid = ", ".join(sorted(k for k in HEADS if k != self.kind))
            raise errors.ConfigError(f"unknown bagging base {self.base!r}; valid: {valid}")
        if not isinstance(self.n_estimators, int | np.integer) or self.n_estimators < 1:
            raise errors.ConfigError(
                f"n_estimators must be an integer >= 1; got {self.n_estimators!r}"
            )
        fraction = self.max_samples
        if not isinstance(fraction, int | float) or not 0.0 < float(fraction) <= 1.0:
            raise errors.ConfigError(f"max_samples must be a number in (0, 1]; got {fraction!r}")
        if self.base_params is not None and not isinstance(self.base_params, Mapping):
            raise errors.ConfigError(f"base_params must be a mapping; got {self.base_params!r}")
        params = dict(self.base_params or {})
        _create(self.base, params)  # unknown parameter names fail before any work
        return params

    def _fixed_c(self, params: dict[str, Any], X: Any, y: Any) -> dict[str, Any]:
        """Logistic members: ``C`` chosen once on all rows (see the class docstring)."""
        if self.base != "logistic":
            return params
        Cs = params.get("Cs")
        if Cs is not None and np.asarray(Cs).size == 1:
            return params
        chooser = _create(self.base, params).fit(X, y)
        return {**params, "Cs": [float(chooser.C_)]}


def _create(kind: str, params: Mapping[str, Any]) -> Any:
    from headstart.heads.kinds import create_head  # kinds imports this module

    return create_head(kind, **params)
