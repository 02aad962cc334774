"""Pseudo-labels from unlabelled embeddings (headstart.heads.semi): the calibrated threshold,
each method, and the CV choice beating labelled-only training on a two-cluster case."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.errors import ConfigError
from headstart.heads import LogisticHead
from headstart.heads.semi import MIN_CALIBRATION, calibrated_threshold, pseudo_label, select


def _clusters(rng: np.random.Generator, n: int, d: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Two well separated clusters along the first axis, buried in noisy other axes: with a
    handful of labels a linear head leans on the noise; unlabelled points show the gap."""
    y = np.arange(n) % 2
    X = rng.normal(size=(n, d)) * 1.5
    X[:, 0] = np.where(y == 1, 3.0, -3.0) + rng.normal(size=n) * 0.5
    return X.astype(np.float32), y


def test_threshold_is_the_lowest_reaching_the_precision() -> None:
    conf = np.array([0.99, 0.98, 0.97, 0.96, 0.95, 0.9, 0.8, 0.7, 0.6])
    right = np.array([1, 1, 1, 1, 1, 1, 0, 1, 0], dtype=bool)
    assert calibrated_threshold(conf, right, 0.95) == pytest.approx(0.9)
    assert calibrated_threshold(conf, right, 0.85) == pytest.approx(0.7)  # 7 of 8 right
    # fewer than MIN_CALIBRATION predictions say nothing; nothing reaching it: inf
    assert calibrated_threshold(conf[: MIN_CALIBRATION - 1], right[:4], 0.5) == float("inf")
    assert calibrated_threshold(conf, np.zeros(9, dtype=bool), 0.5) == float("inf")
    # equal confidences are never cut apart
    tied = np.array([0.9] * 6 + [0.5])
    assert calibrated_threshold(tied, np.array([1, 1, 1, 1, 1, 0, 1], dtype=bool), 0.95) == (
        float("inf")
    )


def test_semi_supervised_head_beats_labelled_only_on_two_clusters() -> None:
    head = LogisticHead(Cs=[1.0])
    gains = []
    for seed in range(2):
        rng = np.random.default_rng(seed)
        X_l, y_l = _clusters(rng, 12)
        X_u, _ = _clusters(rng, 200)
        X_t, y_t = _clusters(rng, 400)
        chosen = select(head, X_l, y_l, X_u, seed=0)
        assert chosen.chosen != "none", chosen.reason
        best = chosen.best
        assert best is not None and best.pseudo_accuracy is not None
        assert best.pseudo_accuracy >= 0.9 and best.checked >= 6
        p = chosen.pseudo
        assert len(p.rows) >= 100 and np.isfinite(p.threshold)
        alone = LogisticHead(Cs=[1.0]).fit(X_l, y_l)
        semi = LogisticHead(Cs=[1.0]).fit(
            np.vstack([X_l, X_u[p.rows]]), np.concatenate([y_l, p.labels])
        )
        gains.append(np.mean(semi.predict(X_t) == y_t) - np.mean(alone.predict(X_t) == y_t))
    assert min(gains) >= 0.15, gains  # labelled only: ~0.66-0.70; semi-supervised: ~1.0


def test_each_method_labels_clear_clusters_right() -> None:
    rng = np.random.default_rng(3)
    X_l, y_l = _clusters(rng, 30, d=4)
    X_u, y_u = _clusters(rng, 100, d=4)
    X = np.vstack([X_l, X_u])
    y = np.concatenate([y_l, np.full(len(X_u), -1)])
    for method in ("self_training", "label_spreading"):
        p = pseudo_label(method, X, y, precision=0.95)
        assert len(p.rows) >= 50 and p.rows.min() >= len(y_l), method  # unlabelled rows only
        assert np.mean(p.labels == y_u[p.rows - len(y_l)]) >= 0.95, method
    assert len(pseudo_label("none", X, y, precision=0.95).rows) == 0


def test_asked_method_is_kept_and_bad_or_tiny_input_is_handled() -> None:
    rng = np.random.default_rng(0)
    X_l, y_l = _clusters(rng, 12, d=4)
    X_u, _ = _clusters(rng, 40, d=4)
    asked = select(LogisticHead(Cs=[1.0]), X_l, y_l, X_u, method="self_training")
    assert asked.chosen == "self_training"
    assert [c.method for c in asked.candidates] == ["none", "self_training"]
    assert asked.candidates[0].oof_proba.shape == (12, 2)
    with pytest.raises(ConfigError, match="bogus"):
        select(LogisticHead(), X_l, y_l, X_u, method="bogus")
    one_each = select(LogisticHead(), X_l[:2], y_l[:2], X_u)  # one label per class: no CV
    assert one_each.chosen == "none" and one_each.candidates == []
    assert "too few" in one_each.reason
