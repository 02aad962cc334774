"""Multi-label metrics with 95% bootstrap intervals.

mAP is the mean over labels of average precision (scikit-learn's definition: precision at each
distinct score, weighted by the recall it adds), over the labels with at least one positive in
the evaluated set.  F1 uses each label's tuned threshold; micro-F1 pools every (image, label)
decision, macro-F1 averages the labels' F1.  Intervals resample images with replacement, 200
replicates at a time (weights per image), like :mod:`headstart.stats.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from headstart.errors import DataError
from headstart.stats.bootstrap import (
    Interval,
    percentile_interval,
    resample_chunks,
    resample_weights,
)

__all__ = ["LabelMetrics", "MultiLabelMetrics", "f1_scores", "multilabel_metrics", "weighted_ap"]


@dataclass(frozen=True)
class LabelMetrics:
    """One label: average precision, and precision/recall/F1 at its threshold."""

    name: str
    average_precision: float | None
    precision: float
    recall: float
    f1: float
    threshold: float
    support: int


@dataclass(frozen=True)
class MultiLabelMetrics:
    """Scores of a multi-label task on a labelled set."""

    n: int
    labels: list[str]
    mean_ap: Interval
    macro_f1: Interval
    micro_f1: Interval
    subset_accuracy: float
    hamming_loss: float
    per_label: list[LabelMetrics]
    kind: str = "multi_label"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MultiLabelMetrics:
        try:
            return cls(
                n=int(d["n"]),
                labels=[str(x) for x in d["labels"]],
                mean_ap=Interval(**d["mean_ap"]),
                macro_f1=Interval(**d["macro_f1"]),
                micro_f1=Interval(**d["micro_f1"]),
                subset_accuracy=float(d["subset_accuracy"]),
                hamming_loss=float(d["hamming_loss"]),
                per_label=[LabelMetrics(**x) for x in d["per_label"]],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"malformed multi-label metrics record: {exc!r}") from None


def weighted_ap(W: NDArray[np.float64], y: NDArray[np.bool_], p: NDArray[Any]) -> NDArray[Any]:
    """Average precision of one label for each row of image weights ``W`` (B, n)."""
    order = np.argsort(-p, kind="stable")
    ps, ys, Ws = p[order], y[order], W[:, order]
    ends = np.flatnonzero(np.r_[ps[1:] != ps[:-1], True])
    tp = np.cumsum(Ws * ys, axis=1)[:, ends]
    seen = np.cumsum(Ws, axis=1)[:, ends]
    positives = tp[:, -1]
    gained = np.diff(np.concatenate([np.zeros((len(W), 1)), tp], axis=1), axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (gained * (tp / np.maximum(seen, 1e-12))).sum(axis=1) / positives
    return np.where(positives > 0, ap, np.nan)


def f1_scores(
    W: NDArray[np.float64], Y: NDArray[np.bool_], pred: NDArray[np.bool_]
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Per replicate: macro-F1 (labels with a true or predicted positive), micro-F1, per-label
    (tp, fp, fn) are counted with image weights ``W``."""
    tp = W @ (Y & pred)
    fp = W @ (~Y & pred)
    fn = W @ (Y & ~pred)
    denominator = 2 * tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        per_label = np.where(denominator > 0, 2 * tp / denominator, np.nan)
        micro = 2 * tp.sum(1) / np.maximum(denominator.sum(1), 1e-12)
    macro = np.nanmean(per_label, axis=1)
    return macro, micro, per_label


def multilabel_metrics(
    Y: NDArray[Any],
    P: NDArray[np.float64],
    thresholds: NDArray[np.float64],
    labels: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> MultiLabelMetrics:
    """mAP, macro/micro-F1 (with intervals), subset accuracy, Hamming loss, per-label scores of
    0/1 truth ``Y`` (n, L) against probabilities ``P`` (n, L) thresholded per label."""
    Y = np.asarray(Y, dtype=bool)
    n = len(Y)
    if n == 0:
        raise DataError("cannot evaluate 0 predictions; the evaluation set is empty")
    pred = thresholds <= P
    replicates = np.empty((3, n_boot + 1))  # mean AP, macro-F1, micro-F1 of each row
    for part, W in _weight_chunks(n, n_boot, seed):
        scores = _scores(W, Y, P, pred)
        if part.start == 0:
            ap, per_label_f1 = scores[0][0], scores[3][0]  # the point estimate's
        replicates[:, part] = _summary(scores)
    mean_ap, macro, micro = replicates
    tp, fp, fn = ((Y & pred).sum(0), (~Y & pred).sum(0), (Y & ~pred).sum(0))
    rows = [
        LabelMetrics(
            name=str(label),
            average_precision=None if np.isnan(ap[j]) else float(ap[j]),
            precision=float(tp[j] / max(tp[j] + fp[j], 1)),
            recall=float(tp[j] / max(tp[j] + fn[j], 1)),
            f1=0.0 if np.isnan(per_label_f1[j]) else float(per_label_f1[j]),
            threshold=float(thresholds[j]),
            support=int(Y[:, j].sum()),
        )
        for j, label in enumerate(labels)
    ]
    return MultiLabelMetrics(
        n=n,
        labels=[str(x) for x in labels],
        mean_ap=_interval(mean_ap),
        macro_f1=_interval(macro),
        micro_f1=_interval(micro),
        subset_accuracy=float((pred == Y).all(axis=1).mean()),
        hamming_loss=float((pred != Y).mean()),
        per_label=rows,
    )


def _weight_chunks(n: int, n_boot: int, seed: int) -> Iterator[tuple[slice, NDArray[np.float64]]]:
    """Image weights, a chunk of rows at a time, and which rows they are: row 0 weighs every
    image once (the point estimate), rows 1.. are the resamples.  Row 0 rides with the first
    chunk: numpy sums a lone row in another order, which would move its last bits."""
    ones = np.ones((1, n))
    chunks = resample_chunks(n, n_boot, seed, 200)
    first = next(chunks, None)
    if first is None:
        yield slice(0, 1), ones
        return
    yield slice(0, first[0].stop + 1), np.concatenate([ones, resample_weights(first[1], n)])
    for part, idx in chunks:
        yield slice(part.start + 1, part.stop + 1), resample_weights(idx, n)


def _scores(
    W: NDArray[np.float64], Y: NDArray[np.bool_], P: NDArray[np.float64], pred: NDArray[np.bool_]
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Per row of image weights ``W``: per-label AP (B, L), macro-F1, micro-F1, per-label F1."""
    with np.errstate(invalid="ignore"):
        ap = np.stack([weighted_ap(W, Y[:, j], P[:, j]) for j in range(Y.shape[1])], axis=1)
    return (ap, *f1_scores(W, Y, pred))


def _summary(scores: tuple[NDArray[Any], ...]) -> NDArray[np.float64]:
    """(3, B): mean AP (over the labels that have one), macro-F1 and micro-F1 of each row."""
    ap, macro, micro, _ = scores
    with np.errstate(invalid="ignore"):
        mean_ap = np.nanmean(ap, axis=1)
    return np.stack([mean_ap, macro, micro])


def _interval(values: NDArray[Any]) -> Interval:
    """Point estimate (row 0) and the interval of the replicates (rows 1..)."""
    return percentile_interval(float(np.nan_to_num(values[0])), values[1:])
