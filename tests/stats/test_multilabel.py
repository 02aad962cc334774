"""Multi-label metrics agree with scikit-learn; per-label thresholds are the F1-best ones;
``task_metrics`` picks the right kind for a task."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from headstart.data import Task
from headstart.heads import tune_thresholds
from headstart.stats import Metrics, MultiLabelMetrics, headline, metrics_from_dict, task_metrics
from headstart.stats.multilabel import multilabel_metrics


def test_multilabel_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    Y = rng.random((300, 6)) < 0.3
    P = np.clip(0.4 * Y + 0.6 * rng.random((300, 6)), 0, 1).round(2)  # ties included
    thresholds = tune_thresholds(Y, P)
    m = multilabel_metrics(Y, P, thresholds, list("abcdef"), n_boot=300)
    expected_ap = np.mean([average_precision_score(Y[:, j], P[:, j]) for j in range(6)])
    assert m.mean_ap.value == pytest.approx(expected_ap, abs=1e-12)
    pred = thresholds <= P
    assert m.macro_f1.value == pytest.approx(f1_score(Y, pred, average="macro"))
    assert m.micro_f1.value == pytest.approx(f1_score(Y, pred, average="micro"))
    assert m.mean_ap.low < m.mean_ap.value < m.mean_ap.high


def test_tuned_thresholds_give_the_best_f1_per_label() -> None:
    rng = np.random.default_rng(1)
    y = rng.random(200) < 0.4
    p = np.clip(0.3 * y + 0.7 * rng.random(200), 0, 1)
    best = tune_thresholds(y[:, None], p[:, None])[0]
    tuned = f1_score(y, p >= best)
    for t in np.linspace(0.01, 0.99, 99):
        assert tuned >= f1_score(y, p >= t) - 1e-12


def test_task_metrics_dispatch_on_the_kind_and_round_trip_as_json() -> None:
    rng = np.random.default_rng(2)
    multi_class = Task("left", ("a", "b", "c"))
    proba = rng.dirichlet(np.ones(3), size=40)
    cells = [(multi_class.classes[int(i)],) for i in rng.integers(0, 3, 40)]
    m = task_metrics(multi_class, cells, proba, n_boot=50)
    assert isinstance(m, Metrics) and headline(m) == ("accuracy", m.accuracy)
    items = Task("items", ("a", "b", "c"), multi_label=True)
    cells_ml = [
        tuple(c for c, hit in zip("abc", row, strict=True) if hit)
        for row in rng.random((40, 3)) < 0.4
    ]
    ml = task_metrics(items, cells_ml, rng.random((40, 3)), n_boot=50)
    assert isinstance(ml, MultiLabelMetrics) and headline(ml) == ("mAP", ml.mean_ap)
    assert [x.threshold for x in ml.per_label] == [0.5, 0.5, 0.5]
    for metrics in (m, ml):
        assert metrics_from_dict(metrics.to_dict()) == metrics
