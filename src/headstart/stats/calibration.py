"""Calibration of predicted probabilities: reliability bins and expected calibration error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ReliabilityBins", "expected_calibration_error", "reliability_bins"]


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-label reliability per confidence bin: mean confidence, accuracy and count."""

    edges: np.ndarray  # (n_bins + 1,)
    confidence: np.ndarray  # (n_bins,) mean top-1 probability in the bin (NaN when empty)
    accuracy: np.ndarray  # (n_bins,) fraction correct in the bin (NaN when empty)
    count: np.ndarray  # (n_bins,) images in the bin


def reliability_bins(proba: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> ReliabilityBins:
    """Bin images by top-1 probability; ``proba`` is (N, C), ``y_true`` holds column indices."""
    proba = np.asarray(proba, dtype=np.float64)
    y_true = np.asarray(y_true)
    conf = proba.max(axis=1)
    correct = proba.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, n_bins - 1)
    count = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=conf, minlength=n_bins) / count
        accuracy = np.bincount(which, weights=correct.astype(float), minlength=n_bins) / count
    return ReliabilityBins(edges, mean_conf, accuracy, count)


def expected_calibration_error(proba: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean |accuracy - confidence| over top-1 confidence bins."""
    bins = reliability_bins(proba, y_true, n_bins)
    total = bins.count.sum()
    if total == 0:
        return float("nan")
    used = bins.count > 0
    gap = np.abs(bins.accuracy[used] - bins.confidence[used])
    return float((gap * bins.count[used]).sum() / total)
