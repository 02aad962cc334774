"""Mean, standard deviation and 95% Student-t interval of a few scores (folds, seeds)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Summary", "t_quantile"]


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t with ``df`` degrees of freedom."""
    # scipy.special is imported here, not at the top: it costs a second of start-up that every
    # command importing the statistics would pay, and only summaries need it.
    from scipy.special import stdtrit

    return float(stdtrit(df, q))


@dataclass(frozen=True)
class Summary:
    """Mean, standard deviation and 95% t-interval of one metric over folds or seeds."""

    mean: float
    std: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """Summarise scores; one score gives a zero-width interval."""
        arr = np.asarray(values, dtype=np.float64)
        mean = float(arr.mean())
        std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
        half = t_quantile(0.975, arr.size - 1) * std / float(np.sqrt(arr.size)) if std else 0.0
        return cls(mean, std, mean - half, mean + half)
