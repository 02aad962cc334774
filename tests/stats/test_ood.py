"""Out-of-distribution detection metrics: AUROC as scikit-learn computes it (ties half), FPR at
95% TPR by hand, bootstrap intervals around the values, the threshold's shares, bad input."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from headstart.errors import DataError
from headstart.stats import auroc, fpr_at_tpr, ood_metrics


def test_auroc_is_sklearns_with_the_foreign_images_as_positives() -> None:
    rng = np.random.default_rng(0)
    inside = np.round(rng.normal(0.0, 1.0, 300), 1)  # rounded: plenty of ties
    outside = np.round(rng.normal(1.0, 1.0, 120), 1)
    truth = np.r_[np.zeros(len(inside)), np.ones(len(outside))]
    want = roc_auc_score(truth, np.r_[inside, outside])
    assert auroc(inside, outside) == pytest.approx(want, abs=1e-12)
    assert auroc([0.1, 0.2], [0.3, 0.4]) == 1.0 and auroc([0.3, 0.4], [0.1, 0.2]) == 0.0
    assert auroc([0.5], [0.5]) == 0.5


def test_fpr_at_95_tpr_counts_foreign_images_under_the_95th_percentile() -> None:
    inside = np.arange(1, 101) / 100.0  # 95% of them are at or below 0.95
    outside = np.array([0.5, 0.9, 0.95, 0.96, 2.0])
    assert fpr_at_tpr(inside, outside) == pytest.approx(3 / 5)
    assert fpr_at_tpr(inside, outside, tpr=0.5) == pytest.approx(1 / 5)  # at or below 0.5


def test_ood_metrics_have_intervals_and_the_thresholds_shares() -> None:
    rng = np.random.default_rng(1)
    inside = rng.normal(0.2, 0.05, 200)
    outside = np.r_[rng.normal(0.5, 0.1, 100), np.nan]  # an unreadable image: left out
    m = ood_metrics(inside, outside, threshold=0.3, n_boot=300)
    assert m.n_in == 200 and m.n_out == 100
    for interval in (m.auroc, m.fpr_at_95_tpr):
        assert interval.low <= interval.value <= interval.high
    assert m.auroc.value > 0.95 and m.fpr_at_95_tpr.value < 0.2
    assert m.in_passed == pytest.approx(np.mean(inside <= 0.3))
    assert m.out_flagged == pytest.approx(np.mean(outside[:-1] > 0.3))
    assert set(m.to_dict()) >= {"auroc", "fpr_at_95_tpr", "threshold", "in_passed"}
    plain = ood_metrics(inside, outside, n_boot=0)
    assert plain.auroc.low == plain.auroc.value == plain.auroc.high
    assert plain.in_passed is None and plain.out_flagged is None


def test_no_scores_is_a_one_line_error() -> None:
    with pytest.raises(DataError, match="no out-of-distribution score"):
        ood_metrics([0.1, 0.2], [np.nan])
    with pytest.raises(DataError, match="no in-distribution score"):
        auroc([], [0.3])
