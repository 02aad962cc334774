"""Gradient-boosted tree heads: scikit-learn's histogram GBDT (``"hgb"``) and LightGBM
(``"lightgbm"``).

Both train with their library and keep only the fitted trees, as one flat "forest" of plain
arrays (:mod:`headstart.heads.forest`).  Prediction is a vectorised numpy walk over them, so a head
rebuilt from exported arrays (no pickle, no model text) predicts exactly like the fitted one and
like the library (to 1e-12 in the tests).  Inputs are checked finite, so the trees'
missing-value routes never matter and only the numeric test ``x[feature] <= threshold`` is kept.

Fitting 3,000 x 1,280 embeddings with 10 classes (a tree per class per round, 1,000 trees) is
dominated by building histograms over the columns.  LightGBM samples 30% of the columns per
tree by default (``colsample_bytree``) and skips the others' histograms: about 50 s on two cores
against 135 s with every column (synthetic embeddings; accuracy 0.56 against 0.61 there, with
only 5% of the columns informative).  scikit-learn's ``max_features`` samples columns per
split but still builds every histogram, so it saves no time and the hgb head keeps all
columns: about 130 s.  LightGBM is the faster of the two.  Neither usually beats the logistic
head on embeddings; they add diversity to an ensemble.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import threadpool_limits

from headstart import errors
from headstart.heads._base import (
    check_class_weight,
    class_weight_by_index,
    encode_labels,
    validate_training_data,
)
from headstart.heads.forest import ForestHead, available_cores, flat_forest

__all__ = ["HGBHead", "LightGBMHead"]

#: Below this many feature values (rows x columns) a fit runs on one thread by default.
_THREADED_VALUES = 200_000


def _check_fraction(name: str, value: Any) -> None:
    if not isinstance(value, int | float) or not 0.0 < float(value) <= 1.0:
        raise errors.ConfigError(f"{name} must be a number in (0, 1]; got {value!r}")


def _threads(n_jobs: Any, shape: tuple[int, ...]) -> int:
    """Threads for a fit on data of ``shape``: ``n_jobs``, or by default the cores this process
    may use, but one for small data, where OpenMP threads waiting on each other cost more
    than they save (10-30x slower on a busy two-core machine)."""
    if n_jobs is None:
        return available_cores() if int(np.prod(shape)) >= _THREADED_VALUES else 1
    if not isinstance(n_jobs, int | np.integer) or n_jobs < 1:
        raise errors.ConfigError(f"n_jobs must be None or an integer >= 1; got {n_jobs!r}")
    return int(n_jobs)


class HGBHead(ForestHead):
    """scikit-learn's :class:`~sklearn.ensemble.HistGradientBoostingClassifier` on embeddings.

    Parameters
    ----------
    learning_rate, max_iter, max_leaf_nodes, min_samples_leaf, l2_regularization:
        As in scikit-learn (shrinkage, boosting rounds, leaves per tree, rows per leaf, L2 on
        leaf values).
    max_features:
        Share of the columns considered at each split (a regulariser: it saves no time, every
        column's histogram is still built).
    early_stopping:
        ``"auto"`` (on above 10,000 rows, as scikit-learn), ``True`` or ``False``; stops when
        the loss on a stratified 10% of the training rows has not improved for 10 rounds.
        Skipped when that slice could not hold every class.
    class_weight:
        ``None``, ``"balanced"`` or a mapping from class label to weight.
    n_jobs:
        OpenMP threads while fitting (``None``: the cores this process may use; one for data
        under 200,000 values, where threads cost more than they save).
    random_state:
        Seed of feature sampling and the early-stopping split.
    """

    kind: ClassVar[str] = "hgb"

    def __init__(
        self,
        learning_rate: float = 0.1,
        max_iter: int = 100,
        max_leaf_nodes: int = 31,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        max_features: float = 1.0,
        early_stopping: bool | Literal["auto"] = "auto",
        class_weight: Mapping[Any, float] | Literal["balanced"] | None = None,
        n_jobs: int | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_features = max_features
        self.early_stopping = early_stopping
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> HGBHead:
        """Fit on features ``X`` (n_samples, n_features) and labels ``y``; returns ``self``."""
        check_class_weight(self.class_weight)
        _check_fraction("max_features", self.max_features)
        if self.early_stopping not in ("auto", True, False):
            raise errors.ConfigError(
                f"early_stopping must be 'auto', true or false; got {self.early_stopping!r}"
            )
        _threads(self.n_jobs, ())  # a bad value fails before any work
        X_arr, y_arr = validate_training_data(self, X, y)
        threads = _threads(self.n_jobs, X_arr.shape)
        self.classes_, y_idx = encode_labels(y_arr)
        model = self.sklearn_model(y_idx)
        try:
            with threadpool_limits(limits=threads, user_api="openmp"):
                model.fit(X_arr, y_idx)
        except ValueError as exc:  # a parameter scikit-learn rejects: one line, named
            raise errors.ConfigError(f"hgb head: {exc}") from None
        trees = [
            (k, _hgb_nodes(predictor.nodes))
            for iteration in model._predictors
            for k, predictor in enumerate(iteration)
        ]
        self._set_forest(flat_forest(trees, model._baseline_prediction), int(model.n_iter_))
        return self

    def sklearn_model(self, y_idx: NDArray[np.intp]) -> Any:
        """The unfitted scikit-learn estimator this head trains on labels ``y_idx`` (class
        indices), with early stopping switched off where the data cannot support it."""
        # lazy: sklearn.ensemble takes a while to import and most runs use other heads
        from sklearn.ensemble import HistGradientBoostingClassifier

        counts = np.bincount(y_idx)
        early = self.early_stopping is True or (self.early_stopping == "auto" and len(y_idx) > 1e4)
        n_val = int(np.ceil(0.1 * len(y_idx)))
        if early and (counts.min() < 2 or n_val < len(counts)):
            early = False  # a stratified hold-out must see every class
        return HistGradientBoostingClassifier(
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            max_features=float(self.max_features),
            early_stopping=early,
            class_weight=class_weight_by_index(self.class_weight, self.classes_),
            random_state=self.random_state,
        )


def _hgb_nodes(nodes: NDArray[Any]) -> dict[str, NDArray[Any]]:
    if np.any(nodes["is_categorical"]):  # never on numeric arrays; a guard for future versions
        raise errors.ConfigError("hgb head: categorical splits are not supported")
    leaf = nodes["is_leaf"].astype(bool)
    return {
        "feature": nodes["feature_idx"].astype(np.int64),
        "threshold": nodes["num_threshold"].astype(np.float64),
        "left": np.where(leaf, -1, nodes["left"].astype(np.int64)),
        "right": np.where(leaf, -1, nodes["right"].astype(np.int64)),
        "value": nodes["value"].astype(np.float64),
    }


class LightGBMHead(ForestHead):
    """LightGBM's :class:`~lightgbm.LGBMClassifier` on embeddings.

    Parameters
    ----------
    n_estimators, learning_rate, num_leaves, min_child_samples, reg_lambda:
        As in LightGBM (rounds, shrinkage, leaves per tree, rows per leaf, L2 on leaf values).
    subsample:
        Share of the rows each tree is grown on (row bagging every round when below 1).
    colsample_bytree:
        Share of the columns each tree may split on (default 0.3: 2.7x faster on 1,280-wide
        embeddings; use 1.0 where accuracy matters more than time).
    class_weight:
        ``None``, ``"balanced"`` or a mapping from class label to weight.
    n_jobs:
        LightGBM threads (``None``: the cores this process may use, one for data under 200,000
        values; LightGBM's own default takes every core of the machine, which is slower on a
        shared or limited box).
    random_state:
        Seed of row and column sampling.
    """

    kind: ClassVar[str] = "lightgbm"

    def __init__(
        self,
        n_estimators: int = 100,
        learning_rate: float = 0.1,
        num_leaves: int = 31,
        min_child_samples: int = 20,
        subsample: float = 1.0,
        colsample_bytree: float = 0.3,
        reg_lambda: float = 0.0,
        class_weight: Mapping[Any, float] | Literal["balanced"] | None = None,
        n_jobs: int | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.class_weight = class_weight
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X: Any, y: Any) -> LightGBMHead:
        """Fit on features ``X`` (n_samples, n_features) and labels ``y``; returns ``self``."""
        check_class_weight(self.class_weight)
        _check_fraction("subsample", self.subsample)
        _check_fraction("colsample_bytree", self.colsample_bytree)
        _threads(self.n_jobs, ())
        X_arr, y_arr = validate_training_data(self, X, y)
        self.classes_, y_idx = encode_labels(y_arr)
        model = self.lightgbm_model(X_arr.shape)
        from lightgbm.basic import LightGBMError  # lazy, as in lightgbm_model

        try:
            model.fit(X_arr, y_idx)
        except (LightGBMError, ValueError, TypeError) as exc:  # a bad parameter value
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
            raise errors.ConfigError(f"lightgbm head: {message}") from None
        dump = model.booster_.dump_model()
        per_round = int(dump["num_tree_per_iteration"])
        trees = [
            (int(info["tree_index"]) % per_round, _lightgbm_nodes(info["tree_structure"]))
            for info in dump["tree_info"]
        ]
        # LightGBM folds its starting score into the first trees' leaves: the baseline is 0
        self._set_forest(flat_forest(trees, np.zeros(per_round)), len(trees) // per_round)
        return self

    def lightgbm_model(self, shape: tuple[int, ...] = ()) -> Any:
        """The unfitted :class:`lightgbm.LGBMClassifier` this head trains (on class indices)
        for training data of ``shape``."""
        try:  # lazy: an optional-feeling dependency, and slow to import
            from lightgbm import LGBMClassifier
        except ImportError:  # pragma: no cover - lightgbm is a dependency
            raise errors.ConfigError(
                "the lightgbm head needs LightGBM: pip install lightgbm"
            ) from None
        return LGBMClassifier(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            subsample=self.subsample,
            # row bagging only happens with a bagging frequency; every round, when asked for
            subsample_freq=1 if float(self.subsample) < 1.0 else 0,
            colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda,
            class_weight=class_weight_by_index(self.class_weight, self.classes_),
            n_jobs=_threads(self.n_jobs, shape),
            random_state=self.random_state,
            deterministic=True,
            force_col_wise=True,  # what LightGBM picks for wide data anyway, without probing
            verbose=-1,
        )


def _lightgbm_nodes(root: Mapping[str, Any]) -> dict[str, NDArray[Any]]:
    """A LightGBM tree (``dump_model`` JSON) as a node table in pre-order (children after
    their parent)."""
    rows: list[list[float]] = []  # feature, threshold, left, right, value

    def visit(node: Mapping[str, Any]) -> int:
        index = len(rows)
        rows.append([0, 0.0, -1, -1, float(node.get("leaf_value", 0.0))])
        if "leaf_value" in node:
            return index
        if node.get("decision_type") != "<=" or node.get("missing_type") == "Zero":
            raise errors.ConfigError(
                f"lightgbm head: unsupported split {node.get('decision_type')!r} "
                f"(missing type {node.get('missing_type')!r}); only numeric '<=' splits are"
            )
        rows[index][:2] = [int(node["split_feature"]), float(node["threshold"])]
        rows[index][2] = visit(node["left_child"])
        rows[index][3] = visit(node["right_child"])
        return index

    visit(root)
    table = np.asarray(rows, dtype=np.float64)  # feature and child indices are exact in float64
    ints = table[:, [0, 2, 3]].astype(np.int64)
    return {
        "feature": ints[:, 0],
        "threshold": table[:, 1],
        "left": ints[:, 1],
        "right": ints[:, 2],
        "value": table[:, 4],
    }
