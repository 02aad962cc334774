"""Honest evaluation: metrics with bootstrap confidence intervals and their rendering."""

from __future__ import annotations

from headstart.evaluate.calibration import (
    ReliabilityBins,
    expected_calibration_error,
    reliability_bins,
)
from headstart.evaluate.metrics import (
    ClassMetrics,
    Interval,
    Metrics,
    evaluate_predictions,
    metrics_renderables,
)

__all__ = [
    "ClassMetrics",
    "Interval",
    "Metrics",
    "ReliabilityBins",
    "evaluate_predictions",
    "expected_calibration_error",
    "metrics_renderables",
    "reliability_bins",
]
