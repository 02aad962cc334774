"""Pieces shared by the heads: input checks, label encoding, standardisation, link functions.

Every head keeps its fitted state as plain numpy arrays and predicts with the functions here, so a
head rebuilt from exported arrays (no pickle) predicts bit-for-bit like the one that was fitted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from headstart import errors

__all__ = [
    "FLOAT_DTYPES",
    "Head",
    "HeadNotFittedError",
    "check_class_weight",
    "class_weight_by_index",
    "classes_from_json",
    "classes_to_json",
    "encode_labels",
    "ensure_fitted",
    "fit_standardiser",
    "probabilities_from_scores",
    "standardise",
    "validate_predict_input",
    "validate_training_data",
]

FLOAT_DTYPES: list[type] = [np.float64, np.float32]
FloatArray = NDArray[np.floating[Any]]


class HeadNotFittedError(errors.NotFittedError, SklearnNotFittedError):
    """A head was used before ``fit``; both headstart's and scikit-learn's error type."""


def ensure_fitted(head: BaseEstimator) -> None:
    """Raise :class:`HeadNotFittedError` unless ``head`` has been fitted."""
    try:
        check_is_fitted(head)
    except SklearnNotFittedError as exc:
        raise HeadNotFittedError(str(exc)) from None


def validate_training_data(head: BaseEstimator, X: Any, y: Any) -> tuple[FloatArray, NDArray[Any]]:
    """Check ``X``/``y`` as scikit-learn does and record ``n_features_in_``; return arrays."""
    X_arr, y_arr = validate_data(head, X, y, dtype=FLOAT_DTYPES)
    check_classification_targets(y_arr)
    return X_arr, y_arr


def validate_predict_input(head: BaseEstimator, X: Any) -> FloatArray:
    """Check a fitted head's prediction input (feature count included)."""
    ensure_fitted(head)
    X_arr: FloatArray = validate_data(head, X, dtype=FLOAT_DTYPES, reset=False)
    return X_arr


def encode_labels(y: NDArray[Any]) -> tuple[NDArray[Any], NDArray[np.intp]]:
    """Sorted unique classes and each sample's class index; at least two classes are needed."""
    classes, y_idx = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise errors.DataError(
            f"a head needs samples of at least 2 classes; got 1 class: {classes[0]!r}"
        )
    return classes, y_idx.reshape(-1).astype(np.intp)


def check_class_weight(class_weight: Any) -> None:
    """``None``, ``"balanced"`` or a mapping from class label to a positive weight."""
    if class_weight is None or class_weight == "balanced":
        return
    if isinstance(class_weight, Mapping) and all(
        isinstance(w, int | float | np.number) and w >= 0 for w in class_weight.values()
    ):
        return
    raise errors.ConfigError(
        "class_weight must be None, 'balanced' or a mapping of class to weight >= 0; "
        f"got {class_weight!r}"
    )


def class_weight_by_index(class_weight: Any, classes: NDArray[Any]) -> Any:
    """``class_weight`` keyed by class index (what the inner estimator sees) instead of label."""
    if not isinstance(class_weight, Mapping):
        return class_weight
    index = {label: i for i, label in enumerate(classes.tolist())}
    unknown = [label for label in class_weight if label not in index]
    if unknown:
        raise errors.ConfigError(
            f"class_weight names unknown classes {unknown!r}; classes: {classes.tolist()!r}"
        )
    return {i: float(class_weight.get(label, 1.0)) for label, i in index.items()}


def fit_standardiser(X: FloatArray) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-feature mean and scale; constant features get scale 1 so they map to 0."""
    mean = X.mean(axis=0, dtype=np.float64)
    std = X.std(axis=0, dtype=np.float64)
    # A feature whose spread is at rounding level is constant: dividing by it would blow noise up.
    tiny = std < 10 * np.finfo(X.dtype).eps * np.maximum(np.abs(mean), 1.0)
    scale = np.where(tiny, 1.0, std)
    return mean, scale


def standardise(X: FloatArray, mean: NDArray[Any], scale: NDArray[Any]) -> FloatArray:
    """``(X - mean) / scale`` in the dtype of ``X``."""
    out: FloatArray = ((X - mean) / scale).astype(X.dtype, copy=False)
    return out


def probabilities_from_scores(scores: FloatArray) -> NDArray[np.float64]:
    """Class probabilities from linear scores.

    One column (binary problem, positive class) goes through the logistic function; several
    columns through a numerically stable softmax.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1 or scores.shape[1] == 1:
        positive = 1.0 / (1.0 + np.exp(-scores.reshape(-1)))
        return np.column_stack([1.0 - positive, positive])
    shifted = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    proba: NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
    return proba


def classes_to_json(classes: NDArray[Any]) -> list[Any]:
    """Class labels as plain Python values (str, int, float, bool) for a JSON file."""
    values: list[Any] = classes.tolist()
    return values


def classes_from_json(values: Any) -> NDArray[Any]:
    """Inverse of :func:`classes_to_json`."""
    if not isinstance(values, list) or len(values) < 2:
        raise errors.BundleError(
            f"head meta 'classes' must be a list of >= 2 labels; got {values!r}"
        )
    return np.asarray(values)


class Head(ClassifierMixin, BaseEstimator):
    """Common behaviour of the heads: ``predict`` from ``predict_proba`` and state export.

    A subclass sets ``kind`` and ``_array_attrs`` (fitted array attributes, without the trailing
    underscore), implements ``fit`` and ``predict_proba``, and may add JSON-able extras.
    """

    kind: ClassVar[str] = ""
    _array_attrs: ClassVar[tuple[str, ...]] = ()

    classes_: NDArray[Any]
    n_features_in_: int

    def predict(self, X: Any) -> NDArray[Any]:
        """The most probable class of each row of ``X`` (an element of ``classes_``)."""
        proba = self.predict_proba(X)
        labels: NDArray[Any] = self.classes_[np.argmax(proba, axis=1)]
        return labels

    def predict_proba(self, X: Any) -> NDArray[np.float64]:  # pragma: no cover - abstract
        """Class probabilities, one column per element of ``classes_``."""
        raise NotImplementedError

    def export_arrays(self) -> dict[str, NDArray[Any]]:
        """The fitted state as named arrays (safetensors-ready: contiguous, numeric)."""
        return {name: np.ascontiguousarray(getattr(self, name + "_")) for name in self._array_attrs}

    def export_extra(self) -> dict[str, Any]:
        """JSON-able fitted values that are not arrays (e.g. the chosen ``C``)."""
        return {}

    def restore_state(self, arrays: Mapping[str, NDArray[Any]], extra: Mapping[str, Any]) -> None:
        """Set the fitted attributes from :meth:`export_arrays` / :meth:`export_extra` output."""
        for name in self._array_attrs:
            if name not in arrays:
                raise errors.BundleError(
                    f"{self.kind} head state lacks array {name!r}; has: {', '.join(sorted(arrays))}"
                )
            setattr(self, name + "_", np.asarray(arrays[name]))
