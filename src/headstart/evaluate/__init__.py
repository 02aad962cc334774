"""Honest evaluation: metrics with bootstrap confidence intervals and their rendering."""

from __future__ import annotations

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
    "evaluate_predictions",
    "metrics_renderables",
]
