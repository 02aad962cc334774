"""The percentile bootstrap behind every interval: images resampled with replacement in
memory-bounded chunks, each resample's per-image weights, and the 95% interval itself.
Shared by the metrics and the paired comparisons so that a model's interval and a
difference's interval come from one rule."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["Interval", "percentile_interval", "resample_chunks", "resample_weights"]

#: Resamples are drawn in chunks of about this many indices to bound memory on big test sets.
CHUNK_ENTRIES = 1 << 22


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% percentile-bootstrap interval ``[low, high]``."""

    value: float
    low: float
    high: float


def resample_chunks(
    n: int, n_boot: int, seed: int, rows: int | None = None
) -> Iterator[tuple[slice, NDArray[np.intp]]]:
    """``n_boot`` resamples of ``n`` images, as (which replicates, image indices (m, n)) in
    chunks of ``rows`` resamples (default: about :data:`CHUNK_ENTRIES` indices a chunk)."""
    rng = np.random.default_rng(seed)
    step = rows or max(1, CHUNK_ENTRIES // n)
    for start in range(0, n_boot, step):
        m = min(step, n_boot - start)
        yield slice(start, start + m), rng.integers(0, n, size=(m, n))


def resample_weights(idx: NDArray[np.intp], n: int) -> NDArray[np.float64]:
    """``W[r, i]``: how often resample ``r`` drew image ``i`` (one bincount over r * n + i)."""
    m = len(idx)
    keys = (np.arange(m)[:, None] * n + idx).ravel()
    return np.bincount(keys, minlength=m * n).reshape(m, n).astype(np.float64)


def percentile_interval(value: float, replicates: NDArray[np.float64]) -> Interval:
    """``value`` with the 2.5/97.5 percentiles of its replicates (NaN replicates left out; none
    left: a zero-width interval).  A percentile interval can miss a skewed statistic's point
    estimate (macro-F1 on rare classes); widening it to include the estimate keeps
    "value (low-high)" readable."""
    replicates = replicates[~np.isnan(replicates)]
    if replicates.size == 0:
        return Interval(value, value, value)
    low, high = np.percentile(replicates, [2.5, 97.5])
    return Interval(float(value), float(min(low, value)), float(max(high, value)))
