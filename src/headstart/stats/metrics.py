"""Multi-class metrics with 95% bootstrap confidence intervals.

Accuracy and macro-F1 come with percentile bootstrap intervals: the test set is resampled with
replacement ``n_boot`` times (all at once, vectorised) and each replicate's scores are computed
from per-class counts.  Macro-F1 averages over the classes that occur in the true or predicted
labels (scikit-learn's ``f1_score(average="macro")`` without ``labels``), so a class with no
test images neither helps nor hurts it; the per-class table still lists every class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from headstart import errors
from headstart.stats.bootstrap import Interval, percentile_interval, resample_chunks
from headstart.stats.calibration import expected_calibration_error

__all__ = [
    "ClassMetrics",
    "Interval",
    "Metrics",
    "evaluate_predictions",
    "resampled_scores",
]


@dataclass(frozen=True)
class ClassMetrics:
    """Precision, recall and F1 of one class; ``support`` is its number of true samples."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Metrics:
    """Scores of predictions on a labelled set; ``confusion[i][j]``: true ``i``, predicted ``j``."""

    n: int
    classes: list[str]
    accuracy: Interval
    macro_f1: Interval
    per_class: list[ClassMetrics]
    confusion: list[list[int]]
    ece: float | None = None
    """Expected calibration error of the top-1 probabilities (15 bins), when they were given."""
    kind: str = "multi_class"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; :meth:`from_dict` reverses it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Metrics:
        """Rebuild from :meth:`to_dict` output; a missing or malformed field is a DataError."""
        try:
            return cls(
                n=int(d["n"]),
                classes=[str(c) for c in d["classes"]],
                accuracy=Interval(**d["accuracy"]),
                macro_f1=Interval(**d["macro_f1"]),
                per_class=[ClassMetrics(**c) for c in d["per_class"]],
                confusion=[[int(v) for v in row] for row in d["confusion"]],
                ece=None if d.get("ece") is None else float(d["ece"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise errors.DataError(f"malformed metrics record: {exc!r}") from None


def _encode(labels: Sequence[Any], index: Mapping[Any, int], what: str) -> NDArray[np.intp]:
    codes = np.array([index.get(label, -1) for label in labels], dtype=np.intp)
    if np.any(codes < 0):
        unknown = sorted({str(label) for label in labels if label not in index})
        shown = ", ".join(repr(u) for u in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        raise errors.DataError(
            f"{what} has labels that are not among the classes: {shown}{more}; "
            f"classes: {', '.join(map(str, index))}"
        )
    return codes


def _safe_divide(num: NDArray[Any], den: NDArray[Any]) -> NDArray[np.float64]:
    """``num / den`` with 0 where ``den`` is 0 (scikit-learn's ``zero_division=0``)."""
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _scores_from_counts(
    tp: NDArray[Any], n_true: NDArray[Any], n_pred: NDArray[Any], n: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Accuracy and macro-F1 per row of per-class counts (shape (..., k))."""
    accuracy = tp.sum(axis=-1) / n
    f1 = _safe_divide(2.0 * tp, n_true + n_pred)
    present = (n_true + n_pred) > 0
    macro_f1 = _safe_divide((f1 * present).sum(axis=-1), present.sum(axis=-1))
    return accuracy, macro_f1


def resampled_scores(
    true: NDArray[np.intp], pred: NDArray[np.intp], idx: NDArray[np.intp], k: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Accuracy and macro-F1 of each resample (rows of ``idx``) of the (true, pred) pairs."""
    m, n = idx.shape
    # Per resample r and class c, count via bincount on the flat key r * k + c.
    offset = (np.arange(m) * k)[:, None]
    t_key, p_key = (offset + true[idx]).ravel(), (offset + pred[idx]).ravel()
    hit = (true == pred)[idx].ravel()
    n_true = np.bincount(t_key, minlength=m * k).reshape(m, k)
    n_pred = np.bincount(p_key, minlength=m * k).reshape(m, k)
    tp = np.bincount(t_key, weights=hit, minlength=m * k).reshape(m, k)
    return _scores_from_counts(tp, n_true, n_pred, n)


def evaluate_predictions(
    y_true: Sequence[str],
    y_pred: Sequence[str],
    classes: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    proba: np.ndarray | None = None,
) -> Metrics:
    """Accuracy, macro-F1 (with 95% bootstrap intervals), per-class scores and confusion matrix.

    ``classes`` fixes the order of the per-class rows and confusion matrix; classes that never
    occur get zeros.  Raises :class:`~headstart.errors.DataError` for an empty or mismatched
    input or labels outside ``classes``.  ``proba`` (N, C), columns in ``classes`` order, adds
    the expected calibration error.
    """
    if len(y_true) != len(y_pred):
        raise errors.DataError(
            f"y_true and y_pred differ in length: {len(y_true)} != {len(y_pred)}"
        )
    if len(y_true) == 0:
        raise errors.DataError("cannot evaluate 0 predictions; the evaluation set is empty")
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise errors.ConfigError(f"n_boot must be an integer >= 0; got {n_boot!r}")
    names = list(classes)
    index = {label: i for i, label in enumerate(names)}
    if len(index) != len(names) or not names:
        raise errors.DataError(f"classes must be non-empty and unique; got {names!r}")
    true = _encode(list(y_true), index, "y_true")
    pred = _encode(list(y_pred), index, "y_pred")
    n, k = len(true), len(names)
    confusion = np.bincount(true * k + pred, minlength=k * k).reshape(k, k)
    tp, n_true, n_pred = np.diag(confusion), confusion.sum(axis=1), confusion.sum(axis=0)
    accuracy, macro_f1 = _scores_from_counts(tp, n_true, n_pred, n)
    boot_acc, boot_f1 = np.empty(n_boot), np.empty(n_boot)
    for rows, idx in resample_chunks(n, n_boot, seed):
        boot_acc[rows], boot_f1[rows] = resampled_scores(true, pred, idx, k)
    precision, recall = _safe_divide(tp, n_pred), _safe_divide(tp, n_true)
    f1 = _safe_divide(2.0 * tp, n_true + n_pred)
    per_class = [
        ClassMetrics(str(c), float(precision[i]), float(recall[i]), float(f1[i]), int(n_true[i]))
        for i, c in enumerate(names)
    ]
    return Metrics(
        n=n,
        classes=[str(c) for c in names],
        accuracy=percentile_interval(float(accuracy), boot_acc),
        macro_f1=percentile_interval(float(macro_f1), boot_f1),
        per_class=per_class,
        confusion=confusion.tolist(),
        ece=None if proba is None else _ece(proba, true),
    )


def _ece(proba: np.ndarray, true: NDArray[np.intp]) -> float:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(true):
        raise errors.DataError(f"proba must be (N, C) with N = {len(true)}; got {p.shape}")
    return expected_calibration_error(p, true)
