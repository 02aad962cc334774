"""How well a score separates in-distribution images from foreign ones (higher score = more
unusual): AUROC and the false positive rate at 95% true positive rate, with 95% bootstrap
intervals (in- and out-of-distribution images resampled separately).

Conventions (Sun et al. 2022, Liu et al. 2020): in-distribution images are the positives. FPR at
95% TPR is the share of foreign images that still pass the threshold letting 95% of the
in-distribution images pass: lower is better.  AUROC is the chance that a foreign image scores
above an in-distribution one (ties count half): 0.5 is chance, 1 is perfect.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from headstart.errors import DataError
from headstart.stats.bootstrap import Interval, percentile_interval

__all__ = ["OodMetrics", "auroc", "fpr_at_tpr", "ood_metrics"]

#: The in-distribution pass rate at which the false positive rate is read.
TPR = 0.95


def _scores(values: Any, what: str) -> NDArray[np.float64]:
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        raise DataError(f"no {what} score to measure out-of-distribution detection on")
    return x


def auroc(in_scores: Any, out_scores: Any) -> float:
    """P(out-of-distribution score > in-distribution score), ties counting half."""
    s_in = np.sort(_scores(in_scores, "in-distribution"))
    s_out = _scores(out_scores, "out-of-distribution")
    below = np.searchsorted(s_in, s_out, side="left")
    at_or_below = np.searchsorted(s_in, s_out, side="right")
    return float(np.mean((below + at_or_below) / 2.0) / len(s_in))


def fpr_at_tpr(in_scores: Any, out_scores: Any, tpr: float = TPR) -> float:
    """The share of out-of-distribution scores at or below the threshold that lets ``tpr`` of
    the in-distribution scores pass: the smallest in-distribution score at or below which at
    least ``tpr`` of them lie (an image passes when its score <= the threshold)."""
    s_in = _scores(in_scores, "in-distribution")
    s_out = _scores(out_scores, "out-of-distribution")
    threshold = np.quantile(s_in, tpr, method="inverted_cdf")
    return float(np.mean(s_out <= threshold))


@dataclass(frozen=True)
class OodMetrics:
    """AUROC and FPR at 95% TPR with 95% bootstrap intervals; with a model's stored threshold,
    the share of in-distribution images that pass it and of foreign images it flags."""

    auroc: Interval
    fpr_at_95_tpr: Interval
    n_in: int
    n_out: int
    threshold: float | None = None
    in_passed: float | None = None
    """Share of in-distribution images at or below ``threshold``."""
    out_flagged: float | None = None
    """Share of out-of-distribution images above ``threshold``."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def ood_metrics(
    in_scores: Any,
    out_scores: Any,
    *,
    threshold: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> OodMetrics:
    """:class:`OodMetrics` of scores of in-distribution and foreign images (NaN scores, of
    unreadable images, are left out); ``n_boot`` 0 gives zero-width intervals."""
    s_in = _scores(in_scores, "in-distribution")
    s_out = _scores(out_scores, "out-of-distribution")
    rng = np.random.default_rng(seed)
    areas, fprs = np.empty(n_boot), np.empty(n_boot)
    for r in range(n_boot):
        a = s_in[rng.integers(0, len(s_in), len(s_in))]
        b = s_out[rng.integers(0, len(s_out), len(s_out))]
        areas[r], fprs[r] = auroc(a, b), fpr_at_tpr(a, b)
    passed = flagged = None
    if threshold is not None:
        passed = float(np.mean(s_in <= threshold))
        flagged = float(np.mean(s_out > threshold))
    return OodMetrics(
        auroc=percentile_interval(auroc(s_in, s_out), areas),
        fpr_at_95_tpr=percentile_interval(fpr_at_tpr(s_in, s_out), fprs),
        n_in=len(s_in),
        n_out=len(s_out),
        threshold=threshold,
        in_passed=passed,
        out_flagged=flagged,
    )
