"""Is model B really better than model A?  Paired statistics on the same labelled images.

* McNemar's exact test: under "no difference", the images exactly one model gets right are
  equally likely to favour either, so the count favouring B is Binomial(discordant, 1/2);
  :func:`mcnemar_p` is the exact two-sided p-value (``scipy.stats.binomtest``'s, in integers).
* A paired bootstrap: images are resampled with replacement and both models are scored on the
  *same* resample, giving 95% percentile intervals of the accuracy and macro-F1 differences
  (B - A).
* Per-class F1 of both models and their difference.

The verdict calls a difference only when McNemar's p is below 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from headstart.errors import ConfigError, DataError
from headstart.stats.metrics import Interval, evaluate_predictions

__all__ = ["ALPHA", "ClassDifference", "Comparison", "compare_predictions", "mcnemar_p"]

#: Significance level of the verdict.
ALPHA = 0.05
_CHUNK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class ClassDifference:
    """F1 of one class under A and B, and B - A."""

    name: str
    f1_a: float
    f1_b: float
    diff: float
    support: int


@dataclass(frozen=True)
class Comparison:
    """Paired comparison of two models' predictions on the same ``n`` labelled images."""

    n: int
    classes: list[str]
    accuracy_a: float
    accuracy_b: float
    macro_f1_a: float
    macro_f1_b: float
    accuracy_diff: Interval
    macro_f1_diff: Interval
    only_a_right: int
    only_b_right: int
    p_value: float
    per_class: list[ClassDifference]
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        return asdict(self)


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p-value: 2 P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2),
    capped at 1 (1 when no image is discordant)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1))
    return min(1.0, 2 * tail / 2**n)


def _scores(
    true: NDArray[np.intp], pred: NDArray[np.intp], idx: NDArray[np.intp], k: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Accuracy and macro-F1 (over classes present in truth or prediction) per resample row."""
    m, n = idx.shape
    offset = (np.arange(m) * k)[:, None]
    t_key, p_key = (offset + true[idx]).ravel(), (offset + pred[idx]).ravel()
    hit = (true == pred)[idx].ravel()
    n_true = np.bincount(t_key, minlength=m * k).reshape(m, k)
    n_pred = np.bincount(p_key, minlength=m * k).reshape(m, k)
    tp = np.bincount(t_key, weights=hit, minlength=m * k).reshape(m, k)
    den = n_true + n_pred
    f1 = np.divide(2.0 * tp, den, out=np.zeros((m, k)), where=den > 0)
    present = den > 0
    return tp.sum(axis=1) / n, (f1 * present).sum(axis=1) / present.sum(axis=1)


def _paired_bootstrap(
    true: NDArray[np.intp], a: NDArray[np.intp], b: NDArray[np.intp], k: int, n_boot: int, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """B - A accuracy and macro-F1 differences on ``n_boot`` shared resamples."""
    rng = np.random.default_rng(seed)
    n = len(true)
    acc, f1 = np.empty(n_boot), np.empty(n_boot)
    chunk = max(1, _CHUNK_ENTRIES // n)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))
        acc_a, f1_a = _scores(true, a, idx, k)
        acc_b, f1_b = _scores(true, b, idx, k)
        acc[start : start + m], f1[start : start + m] = acc_b - acc_a, f1_b - f1_a
    return acc, f1


def _interval(value: float, replicates: NDArray[np.float64]) -> Interval:
    if replicates.size == 0:
        return Interval(value, value, value)
    low, high = np.percentile(replicates, [2.5, 97.5])
    return Interval(value, float(min(low, value)), float(max(high, value)))


def _verdict(acc: Interval, p: float, n_discordant: int) -> str:
    points = f"{100 * acc.value:+.1f} points (95% CI {100 * acc.low:+.1f}..{100 * acc.high:+.1f})"
    if p < ALPHA and acc.value != 0:
        better = "B" if acc.value > 0 else "A"
        return f"{better} is better: B - A = {points}, McNemar p={p:.3g}"
    return (
        f"no significant difference: B - A = {points}, McNemar p={p:.3g} "
        f"({n_discordant} images where exactly one model is right)"
    )


def compare_predictions(
    y_true: Sequence[str],
    pred_a: Sequence[str],
    pred_b: Sequence[str],
    classes: Sequence[str],
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Compare two models' predictions of the same images (see the module docstring)."""
    if not (len(y_true) == len(pred_a) == len(pred_b)):
        raise DataError(
            f"paired predictions differ in length: {len(y_true)}, {len(pred_a)}, {len(pred_b)}"
        )
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise ConfigError(f"n_boot must be an integer >= 0; got {n_boot!r}")
    ma = evaluate_predictions(y_true, pred_a, classes, n_boot=0)
    mb = evaluate_predictions(y_true, pred_b, classes, n_boot=0)
    index = {c: i for i, c in enumerate(classes)}
    true = np.array([index[c] for c in y_true], dtype=np.intp)
    a = np.array([index[c] for c in pred_a], dtype=np.intp)
    b = np.array([index[c] for c in pred_b], dtype=np.intp)
    only_a = int(np.sum((a == true) & (b != true)))
    only_b = int(np.sum((b == true) & (a != true)))
    p = mcnemar_p(only_a, only_b)
    boot_acc, boot_f1 = _paired_bootstrap(true, a, b, len(index), n_boot, seed)
    acc = _interval(mb.accuracy.value - ma.accuracy.value, boot_acc)
    f1 = _interval(mb.macro_f1.value - ma.macro_f1.value, boot_f1)
    per_class = [
        ClassDifference(ca.name, ca.f1, cb.f1, cb.f1 - ca.f1, ca.support)
        for ca, cb in zip(ma.per_class, mb.per_class, strict=True)
    ]
    return Comparison(
        len(true), list(classes), ma.accuracy.value, mb.accuracy.value, ma.macro_f1.value,
        mb.macro_f1.value, acc, f1, only_a, only_b, p, per_class,
        _verdict(acc, p, only_a + only_b),
    )  # fmt: skip
