"""Honest evaluation: metrics with bootstrap confidence intervals and their rendering."""

from __future__ import annotations

from headstart.evaluate.calibration import (
    ReliabilityBins,
    expected_calibration_error,
    reliability_bins,
)
from headstart.evaluate.compare import Comparison, compare_models, compare_predictions
from headstart.evaluate.cv import CVResult, cross_validate
from headstart.evaluate.metrics import (
    ClassMetrics,
    Interval,
    Metrics,
    evaluate_predictions,
    metrics_renderables,
)
from headstart.evaluate.strategies import StrategyComparison, compare_strategies
from headstart.evaluate.tune import TuneResult, tune

__all__ = [
    "CVResult",
    "ClassMetrics",
    "Comparison",
    "Interval",
    "Metrics",
    "ReliabilityBins",
    "StrategyComparison",
    "TuneResult",
    "compare_models",
    "compare_predictions",
    "compare_strategies",
    "cross_validate",
    "evaluate_predictions",
    "expected_calibration_error",
    "metrics_renderables",
    "reliability_bins",
    "tune",
]
