"""Is model B really better than model A?  Paired statistics on the same labelled images, for
either kind of task.

Multi-class (:func:`compare_predictions`):

* McNemar's exact test: under "no difference", the images exactly one model gets right are
  equally likely to favour either, so the count favouring B is Binomial(discordant, 1/2);
  :func:`mcnemar_p` is the exact two-sided p-value (``scipy.stats.binomtest``'s, in integers).
* A paired bootstrap: images are resampled with replacement and both models are scored on the
  *same* resample, giving 95% percentile intervals of the accuracy and macro-F1 differences
  (B - A).
* Per-class F1 of both models and their difference.

The verdict calls a difference only when McNemar's p is below 0.05.

Multi-label (:func:`compare_multilabel`): the paired bootstrap (images resampled, both models
scored on the same resample) of the mAP and macro-F1 differences, each model's labels decided
by its own thresholds; per-label AP and F1; McNemar on whether each image's whole label set is
exactly right, as a secondary count.  The verdict follows the mAP interval: a difference is
called when its 95% interval excludes 0 (with no resamples, none is called).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from headstart.errors import ConfigError, DataError
from headstart.stats.bootstrap import (
    Interval,
    percentile_interval,
    resample_chunks,
    resample_weights,
)
from headstart.stats.metrics import evaluate_predictions, resampled_scores

# The weighted-AP and F1 kernels score many image-weight rows (bootstrap resamples) at once;
# sharing them keeps compare's mAP the very number ``evaluate`` reports.
from headstart.stats.multilabel import f1_scores, multilabel_metrics, weighted_ap

__all__ = [
    "ALPHA",
    "ClassDifference",
    "Comparison",
    "compare_multilabel",
    "compare_predictions",
    "mcnemar_p",
]

#: Significance level of the verdict.
ALPHA = 0.05


@dataclass(frozen=True)
class ClassDifference:
    """F1 of one class (or label) under A and B, and B - A; a label also has its AP."""

    name: str
    f1_a: float
    f1_b: float
    diff: float
    support: int
    ap_a: float | None = None
    ap_b: float | None = None


@dataclass(frozen=True)
class Comparison:
    """Paired comparison of two models' predictions of one task on the same ``n`` images.

    ``metric`` names the main score (``accuracy``, or ``mAP`` for a multi-label task);
    ``score_a``/``score_b`` are its values and ``diff`` the B - A interval.  ``only_a_right``
    and ``only_b_right`` count the images exactly one model gets right (for a multi-label task:
    the whole label set), ``p_value`` is McNemar's on them.  ``decided_by`` says which
    statistic the verdict follows.
    """

    n: int
    task: str
    multi_label: bool
    classes: list[str]
    metric: str
    score_a: float
    score_b: float
    diff: Interval
    macro_f1_a: float
    macro_f1_b: float
    macro_f1_diff: Interval
    only_a_right: int
    only_b_right: int
    p_value: float
    per_class: list[ClassDifference]
    decided_by: str
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


def _discordant(right_a: NDArray[np.bool_], right_b: NDArray[np.bool_]) -> tuple[int, int]:
    """Images only A gets right, and only B."""
    return int(np.sum(right_a & ~right_b)), int(np.sum(right_b & ~right_a))


def _check_n_boot(n_boot: int) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 0:
        raise ConfigError(f"n_boot must be an integer >= 0; got {n_boot!r}")


def _paired_bootstrap(
    true: NDArray[np.intp], a: NDArray[np.intp], b: NDArray[np.intp], k: int, n_boot: int, seed: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """B - A accuracy and macro-F1 differences on ``n_boot`` shared resamples."""
    acc, f1 = np.empty(n_boot), np.empty(n_boot)
    for rows, idx in resample_chunks(len(true), n_boot, seed):
        acc_a, f1_a = resampled_scores(true, a, idx, k)
        acc_b, f1_b = resampled_scores(true, b, idx, k)
        acc[rows], f1[rows] = acc_b - acc_a, f1_b - f1_a
    return acc, f1


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
    task: str = "label",
) -> Comparison:
    """Compare two models' predicted classes of the same images of a multi-class ``task``
    (see the module docstring)."""
    if not (len(y_true) == len(pred_a) == len(pred_b)):
        raise DataError(
            f"paired predictions differ in length: {len(y_true)}, {len(pred_a)}, {len(pred_b)}"
        )
    _check_n_boot(n_boot)
    ma = evaluate_predictions(y_true, pred_a, classes, n_boot=0)
    mb = evaluate_predictions(y_true, pred_b, classes, n_boot=0)
    index = {c: i for i, c in enumerate(classes)}
    true = np.array([index[c] for c in y_true], dtype=np.intp)
    a = np.array([index[c] for c in pred_a], dtype=np.intp)
    b = np.array([index[c] for c in pred_b], dtype=np.intp)
    only_a, only_b = _discordant(a == true, b == true)
    p = mcnemar_p(only_a, only_b)
    boot_acc, boot_f1 = _paired_bootstrap(true, a, b, len(index), n_boot, seed)
    acc = percentile_interval(mb.accuracy.value - ma.accuracy.value, boot_acc)
    f1 = percentile_interval(mb.macro_f1.value - ma.macro_f1.value, boot_f1)
    per_class = [
        ClassDifference(ca.name, ca.f1, cb.f1, cb.f1 - ca.f1, ca.support)
        for ca, cb in zip(ma.per_class, mb.per_class, strict=True)
    ]
    return Comparison(
        len(true), task, False, list(classes), "accuracy", ma.accuracy.value, mb.accuracy.value,
        acc, ma.macro_f1.value, mb.macro_f1.value, f1, only_a, only_b, p, per_class,
        "McNemar exact test (p < 0.05)", _verdict(acc, p, only_a + only_b),
    )  # fmt: skip


def _multilabel_bootstrap(
    Y: NDArray[np.bool_],
    P: tuple[NDArray[np.float64], NDArray[np.float64]],
    pred: tuple[NDArray[np.bool_], NDArray[np.bool_]],
    n_boot: int,
    seed: int,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """B - A mAP and macro-F1 differences on ``n_boot`` shared resamples (image weights)."""
    n, labels = Y.shape
    d_map, d_f1 = np.empty(n_boot), np.empty(n_boot)
    for rows, idx in resample_chunks(n, n_boot, seed):
        W = resample_weights(idx, n)
        maps, f1s = [], []
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            # a tiny resample can hold no positive of any label: its mean is NaN, left out
            warnings.simplefilter("ignore", RuntimeWarning)
            for p, chosen in zip(P, pred, strict=True):
                ap = np.stack([weighted_ap(W, Y[:, j], p[:, j]) for j in range(labels)], axis=1)
                maps.append(np.nanmean(ap, axis=1))
                f1s.append(f1_scores(W, Y, chosen)[0])
        d_map[rows] = maps[1] - maps[0]
        d_f1[rows] = f1s[1] - f1s[0]
    return d_map, d_f1


def _multilabel_verdict(d: Interval, p: float, n_boot: int) -> str:
    points = f"{100 * d.value:+.1f} points (95% CI {100 * d.low:+.1f}..{100 * d.high:+.1f})"
    mcnemar = f"McNemar on exact label sets p={p:.3g}"
    if n_boot == 0:
        return f"no interval (n_boot=0), so no verdict: mAP B - A = {d.value * 100:+.1f} points"
    if d.low > 0 or d.high < 0:
        better = "B" if d.value > 0 else "A"
        return f"{better} is better: mAP B - A = {points}; {mcnemar}"
    return f"no significant difference: mAP B - A = {points}; {mcnemar}"


def compare_multilabel(
    Y: NDArray[Any],
    proba_a: NDArray[np.float64],
    proba_b: NDArray[np.float64],
    thresholds_a: NDArray[np.float64],
    thresholds_b: NDArray[np.float64],
    labels: Sequence[str],
    *,
    n_boot: int = 2000,
    seed: int = 0,
    task: str = "label",
) -> Comparison:
    """Compare two models' per-label probabilities (n, L) of the same images of a multi-label
    ``task`` against the 0/1 truth ``Y``; each model is thresholded by its own per-label
    thresholds (see the module docstring)."""
    Y = np.asarray(Y).astype(bool)
    P = (np.asarray(proba_a, dtype=np.float64), np.asarray(proba_b, dtype=np.float64))
    if not (Y.shape == P[0].shape == P[1].shape) or Y.ndim != 2 or Y.shape[1] != len(labels):
        raise DataError(
            f"paired probabilities differ in shape: truth {Y.shape}, A {P[0].shape}, "
            f"B {P[1].shape}, {len(labels)} labels"
        )
    if len(Y) == 0:
        raise DataError("cannot compare 0 images; the evaluation set is empty")
    _check_n_boot(n_boot)
    cuts = (np.asarray(thresholds_a, dtype=np.float64), np.asarray(thresholds_b, dtype=np.float64))
    ma = multilabel_metrics(Y, P[0], cuts[0], labels, n_boot=0)
    mb = multilabel_metrics(Y, P[1], cuts[1], labels, n_boot=0)
    pred = (cuts[0] <= P[0], cuts[1] <= P[1])
    only_a, only_b = _discordant((pred[0] == Y).all(axis=1), (pred[1] == Y).all(axis=1))
    p = mcnemar_p(only_a, only_b)
    boot_map, boot_f1 = _multilabel_bootstrap(Y, P, pred, n_boot, seed)
    d_map = percentile_interval(mb.mean_ap.value - ma.mean_ap.value, boot_map)
    d_f1 = percentile_interval(mb.macro_f1.value - ma.macro_f1.value, boot_f1)
    per_label = [
        ClassDifference(
            la.name,
            la.f1,
            lb.f1,
            lb.f1 - la.f1,
            la.support,
            ap_a=la.average_precision,
            ap_b=lb.average_precision,
        )
        for la, lb in zip(ma.per_label, mb.per_label, strict=True)
    ]
    return Comparison(
        len(Y), task, True, [str(x) for x in labels], "mAP", ma.mean_ap.value, mb.mean_ap.value,
        d_map, ma.macro_f1.value, mb.macro_f1.value, d_f1, only_a, only_b, p, per_label,
        "paired bootstrap 95% interval of the mAP difference (excludes 0)",
        _multilabel_verdict(d_map, p, n_boot),
    )  # fmt: skip
