"""Metrics with bootstrap intervals: agreement with scikit-learn, intervals, errors, rendering."""

from __future__ import annotations

import json
import time
import warnings

import numpy as np
import pytest
from rich.console import Console
from sklearn import metrics as skm

from headstart import errors
from headstart.cli.render import abbreviate, metrics_renderables
from headstart.stats import Metrics, evaluate_predictions

CLASSES = ["cat", "dog", "fox", "owl"]


def _labels(n: int, seed: int, accuracy: float = 0.8) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    true = rng.choice(CLASSES, size=n, p=[0.4, 0.3, 0.2, 0.1])
    wrong = rng.choice(CLASSES, size=n)
    pred = np.where(rng.random(n) < accuracy, true, wrong)
    return true.tolist(), pred.tolist()


@pytest.mark.parametrize("seed", range(5))
def test_point_estimates_match_sklearn(seed: int) -> None:
    true, pred = _labels(300, seed, accuracy=0.6)
    m = evaluate_predictions(true, pred, CLASSES, n_boot=50)
    assert m.n == 300
    assert m.accuracy.value == pytest.approx(skm.accuracy_score(true, pred))
    assert m.macro_f1.value == pytest.approx(skm.f1_score(true, pred, average="macro"))
    p, r, f, s = skm.precision_recall_fscore_support(true, pred, labels=CLASSES, zero_division=0)
    np.testing.assert_allclose([c.precision for c in m.per_class], p)
    np.testing.assert_allclose([c.recall for c in m.per_class], r)
    np.testing.assert_allclose([c.f1 for c in m.per_class], f)
    assert [c.support for c in m.per_class] == s.tolist()
    assert m.confusion == skm.confusion_matrix(true, pred, labels=CLASSES).tolist()


def test_bootstrap_replicates_match_sklearn_on_resamples() -> None:
    """The vectorised replicate scores equal sklearn's on the same resampled indices."""
    from headstart.stats.bootstrap import resample_chunks
    from headstart.stats.metrics import resampled_scores

    true, pred = _labels(80, seed=3, accuracy=0.5)
    index = {c: i for i, c in enumerate(CLASSES)}
    t = np.array([index[c] for c in true])
    p = np.array([index[c] for c in pred])
    ((rows, drawn),) = resample_chunks(80, n_boot=20, seed=7)
    acc, f1 = resampled_scores(t, p, drawn, len(CLASSES))
    idx = np.random.default_rng(7).integers(0, 80, size=(20, 80))
    assert rows == slice(0, 20) and np.array_equal(drawn, idx)
    for r in range(20):
        assert acc[r] == pytest.approx(skm.accuracy_score(t[idx[r]], p[idx[r]]))
        assert f1[r] == pytest.approx(skm.f1_score(t[idx[r]], p[idx[r]], average="macro"))


def test_interval_contains_value_and_narrows_with_n() -> None:
    widths = []
    for n in (50, 400, 3200):
        true, pred = _labels(n, seed=1)
        m = evaluate_predictions(true, pred, CLASSES)
        for iv in (m.accuracy, m.macro_f1):
            assert 0.0 <= iv.low <= iv.value <= iv.high <= 1.0
        widths.append(m.accuracy.high - m.accuracy.low)
    assert widths[0] > widths[1] > widths[2]
    # Binomial sanity check: the 95% width of an accuracy near 0.8 on n=400 is about 0.08.
    assert 0.05 < widths[1] < 0.11


def test_deterministic_by_seed() -> None:
    true, pred = _labels(200, seed=2)
    a = evaluate_predictions(true, pred, CLASSES, seed=11)
    b = evaluate_predictions(true, pred, CLASSES, seed=11)
    c = evaluate_predictions(true, pred, CLASSES, seed=12)
    assert a == b
    assert (a.accuracy.low, a.accuracy.high) != (c.accuracy.low, c.accuracy.high)


def test_bootstrap_is_fast() -> None:
    true, pred = _labels(400, seed=0)
    evaluate_predictions(true, pred, CLASSES, n_boot=10)  # warm-up
    start = time.perf_counter()
    evaluate_predictions(true, pred, CLASSES, n_boot=1000)
    assert time.perf_counter() - start < 0.3


def test_absent_class_gets_zeros_without_warnings() -> None:
    true = ["cat", "cat", "dog", "dog"]
    pred = ["cat", "dog", "dog", "dog"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = evaluate_predictions(true, pred, CLASSES, n_boot=200)
    fox = m.per_class[CLASSES.index("fox")]
    assert (fox.precision, fox.recall, fox.f1, fox.support) == (0.0, 0.0, 0.0, 0)
    # Absent classes neither help nor hurt macro-F1 (as sklearn's default labels).
    assert m.macro_f1.value == pytest.approx(skm.f1_score(true, pred, average="macro"))
    assert m.confusion[CLASSES.index("owl")] == [0, 0, 0, 0]


def test_perfect_and_single_sample() -> None:
    m = evaluate_predictions(["dog"], ["dog"], CLASSES)
    assert m.accuracy == m.macro_f1
    assert (m.accuracy.value, m.accuracy.low, m.accuracy.high) == (1.0, 1.0, 1.0)


def test_no_bootstrap_gives_point_interval() -> None:
    true, pred = _labels(30, seed=0)
    m = evaluate_predictions(true, pred, CLASSES, n_boot=0)
    assert m.accuracy.low == m.accuracy.value == m.accuracy.high


def test_empty_input_is_an_error() -> None:
    with pytest.raises(errors.DataError, match="0 predictions"):
        evaluate_predictions([], [], CLASSES)
    assert issubclass(errors.DataError, errors.HeadstartError)


def test_unknown_labels_are_named() -> None:
    with pytest.raises(errors.DataError, match=r"y_true .*'emu', 'yak'.*classes: cat, dog"):
        evaluate_predictions(["cat", "yak", "emu"], ["cat", "cat", "cat"], CLASSES)
    with pytest.raises(errors.DataError, match=r"y_pred .*'emu'"):
        evaluate_predictions(["cat"], ["emu"], CLASSES)


def test_length_mismatch_and_bad_arguments() -> None:
    with pytest.raises(errors.DataError, match="length"):
        evaluate_predictions(["cat"], ["cat", "dog"], CLASSES)
    with pytest.raises(errors.ConfigError, match="n_boot"):
        evaluate_predictions(["cat"], ["cat"], CLASSES, n_boot=-1)
    with pytest.raises(errors.DataError, match="unique"):
        evaluate_predictions(["cat"], ["cat"], ["cat", "cat"])


def test_dict_round_trip_through_json() -> None:
    true, pred = _labels(120, seed=4)
    m = evaluate_predictions(true, pred, CLASSES, n_boot=100)
    d = json.loads(json.dumps(m.to_dict()))
    assert Metrics.from_dict(d) == m
    assert d["accuracy"].keys() == {"value", "low", "high"}
    with pytest.raises(errors.DataError, match="malformed"):
        Metrics.from_dict({"n": 3})


def test_renderables_headline_tables_and_abbreviations() -> None:
    classes = ["longsleeve", "longskirt", "t-shirt", "[hat]"]
    true = ["longsleeve"] * 5 + ["longskirt"] * 4 + ["t-shirt"] * 3 + ["[hat]"] * 3
    pred = ["longsleeve"] * 4 + ["t-shirt"] + ["longskirt"] * 4 + ["t-shirt"] * 3 + ["[hat]"] * 3
    m = evaluate_predictions(true, pred, classes, n_boot=100)
    console = Console(width=120, record=True, color_system=None)
    for renderable in metrics_renderables(m, "validation"):
        console.print(renderable)
    text = console.export_text()
    assert "validation: accuracy 93.3% (95% CI" in text
    assert "macro-F1" in text and "n=15" in text
    assert "[hat]" in text  # names are shown literally, not parsed as markup
    assert "longsle…" in text and "longski…" in text


def test_abbreviate_stays_unique() -> None:
    assert abbreviate(["cat", "dog"]) == ["cat", "dog"]
    assert abbreviate(["longsleeve", "hat"]) == ["longsle…", "hat"]
    assert abbreviate(["t-shirt-long", "t-shirt-short"]) == ["t-shir…g", "t-shir…t"]
    short = abbreviate(["category_alpha", "category_beta", "x"])
    assert len(set(short)) == 3
    assert all(len(s) <= 8 for s in short)
    assert abbreviate(["aaaaaaaaaa", "aaaaaaaaaa", "b"]) == ["#0", "#1", "b"]
