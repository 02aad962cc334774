"""Heads: scikit-learn conformance, string labels, tiny classes, export/import round trip."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.utils.estimator_checks import parametrize_with_checks

from headstart import errors
from headstart.data import Task
from headstart.heads import (
    DEFAULT_CS,
    HEADS,
    KNNHead,
    LogisticHead,
    MLPHead,
    MultiLabelHead,
    create_head,
    export_head,
    import_head,
    task_weights,
)


# All pass every applicable check, so no ``expected_failed_checks`` are declared.  The
# multi-label head is checked on the targets scikit-learn gives a multi-output, multi-label
# classifier (1-D binary, 2-D indicator).
@parametrize_with_checks([LogisticHead(), KNNHead(), MLPHead(), MultiLabelHead()])
def test_sklearn_compatible(estimator: Any, check: Any) -> None:
    check(estimator)


#: Heads that read embeddings (the tfidf head reads texts: tests/heads/test_tfidf.py).
EMBEDDING_HEADS = sorted(kind for kind in HEADS if kind != "tfidf")


def _data(
    n: int = 240, d: int = 32, k: int = 4, seed: int = 0, labels: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=n,
        n_features=d,
        n_informative=8,
        n_classes=k,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=seed,
    )
    names = np.array(labels or [f"class_{i}" for i in range(k)])
    return X.astype(np.float32), names[y]


@pytest.mark.parametrize("kind", EMBEDDING_HEADS)
def test_string_labels_and_probability_columns(kind: str) -> None:
    X, y = _data(labels=["tabby", "bird", "dog", "cat"])
    head = create_head(kind).fit(X[:180], y[:180])
    assert list(head.classes_) == ["bird", "cat", "dog", "tabby"]
    proba = head.predict_proba(X[180:])
    assert proba.shape == (60, 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(head.predict(X[180:]), head.classes_[proba.argmax(axis=1)])
    assert np.mean(head.predict(X[180:]) == y[180:]) > 0.8


@pytest.mark.parametrize("kind", EMBEDDING_HEADS)
def test_class_with_two_samples_fits(kind: str) -> None:
    X, y = _data(n=60, k=3)
    keep = np.concatenate([np.flatnonzero(y != "class_2"), np.flatnonzero(y == "class_2")[:2]])
    head = create_head(kind).fit(X[keep], y[keep])
    assert list(head.classes_) == ["class_0", "class_1", "class_2"]
    assert head.predict_proba(X).shape == (60, 3)


def test_class_with_one_sample_fits_logistic_with_fallback_c() -> None:
    X, y = _data(n=60, k=3)
    keep = np.concatenate([np.flatnonzero(y != "class_2"), np.flatnonzero(y == "class_2")[:1]])
    head = LogisticHead().fit(X[keep], y[keep])
    assert DEFAULT_CS[len(DEFAULT_CS) // 2] == head.C_
    assert np.isnan(head.cv_scores_).all()


@pytest.mark.parametrize("kind", EMBEDDING_HEADS)
@pytest.mark.parametrize("n_classes", [2, 4])
def test_export_import_round_trip(kind: str, n_classes: int) -> None:
    X, y = _data(k=n_classes)
    head = create_head(kind).fit(X, y)
    arrays, meta = export_head(head)
    assert all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in arrays.values())
    meta = json.loads(json.dumps(meta))  # what a bundle writes and reads back
    rebuilt = import_head({k: a.copy() for k, a in arrays.items()}, meta)
    assert type(rebuilt) is type(head)
    assert rebuilt.get_params() == head.get_params()
    np.testing.assert_allclose(rebuilt.predict_proba(X), head.predict_proba(X))
    np.testing.assert_array_equal(rebuilt.predict(X), head.predict(X))
    assert list(rebuilt.classes_) == list(head.classes_)


def test_export_import_integer_labels_and_custom_params() -> None:
    X, y = _data(k=3)
    y_int = np.unique(y, return_inverse=True)[1] * 10
    head = MLPHead(hidden_layer_sizes=(16, 8), activation="tanh", max_iter=50).fit(X, y_int)
    arrays, meta = export_head(head)
    assert meta["classes"] == [0, 10, 20]
    rebuilt = import_head(arrays, json.loads(json.dumps(meta)))
    assert rebuilt.get_params()["hidden_layer_sizes"] == (16, 8)
    np.testing.assert_allclose(rebuilt.predict_proba(X), head.predict_proba(X))
    np.testing.assert_array_equal(
        rebuilt.predict(X), np.array([0, 10, 20])[head.predict_proba(X).argmax(1)]
    )


def test_logistic_meta_carries_chosen_c() -> None:
    X, y = _data()
    head = LogisticHead(Cs=[0.01, 0.1, 1.0]).fit(X, y)
    _, meta = export_head(head)
    assert meta["state"]["C"] == head.C_ in (0.01, 0.1, 1.0)
    assert json.dumps(meta)  # JSON-able


def test_create_head_unknown_kind() -> None:
    with pytest.raises(
        errors.ConfigError,
        match=r"unknown head 'svm'; known: bagging, hgb, knn, lightgbm, logistic, mlp",
    ):
        create_head("svm")


def test_create_head_bad_param_names_the_param_and_valid_ones() -> None:
    with pytest.raises(errors.ConfigError, match=r"'n_neighbours'.*valid: n_neighbors, weights"):
        create_head("knn", n_neighbours=5)


def test_import_head_rejects_bad_meta() -> None:
    head = KNNHead().fit(*_data())
    arrays, meta = export_head(head)
    with pytest.raises(errors.BundleError, match="unknown head 'svm'"):
        import_head(arrays, {**meta, "kind": "svm"})
    with pytest.raises(errors.BundleError, match="format"):
        import_head(arrays, {**meta, "format": 99})
    with pytest.raises(errors.BundleError, match="'embeddings'"):
        import_head({"labels": arrays["labels"]}, meta)


def test_export_requires_fitted_head() -> None:
    with pytest.raises(errors.NotFittedError):
        export_head(LogisticHead())
    with pytest.raises(errors.NotFittedError):
        KNNHead().predict(np.zeros((1, 3)))


@pytest.mark.parametrize(
    ("kind", "params", "match"),
    [
        ("logistic", {"Cs": [0.0]}, "Cs"),
        ("logistic", {"class_weight": "auto"}, "class_weight"),
        ("mlp", {"class_weight": "auto"}, "class_weight"),
        ("knn", {"n_neighbors": 0}, "n_neighbors"),
    ],
)
def test_bad_param_values_raise_config_error(kind: str, params: dict[str, Any], match: str) -> None:
    with pytest.raises(errors.ConfigError, match=match):
        create_head(kind, **params).fit(*_data())


@pytest.mark.parametrize("kind", ["logistic", "mlp"])
def test_balanced_class_weight_lifts_minority_recall(kind: str) -> None:
    X, y = make_classification(
        n_samples=600, n_features=20, weights=[0.92, 0.08], class_sep=0.6, random_state=1
    )
    plain = create_head(kind).fit(X[:400], y[:400])
    balanced = create_head(kind, class_weight="balanced").fit(X[:400], y[:400])
    minority = y[400:] == 1

    def recall(head: Any) -> float:
        return float(np.mean(head.predict(X[400:][minority]) == 1))

    assert recall(balanced) >= recall(plain)


def test_logistic_picks_stronger_regularisation_for_noisy_wide_data() -> None:
    # Few samples, many noisy features: a large C overfits, so CV should pick a small one.
    X, y = make_classification(
        n_samples=150, n_features=400, n_informative=5, n_redundant=0, random_state=0
    )
    head = LogisticHead().fit(X, y)
    assert head.C_ <= 0.1
    assert np.isfinite(head.cv_scores_[0])


def test_knn_distance_weighting_and_exact_match() -> None:
    X = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]], dtype=np.float32)
    head = KNNHead(n_neighbors=3).fit(X, ["a", "b", "b"])
    proba = head.predict_proba(np.array([[2.0, 0.0]]))  # same direction as the "a" sample
    assert proba[0, 0] > 0.99
    uniform = KNNHead(n_neighbors=3, weights="uniform").fit(X, ["a", "b", "b"])
    np.testing.assert_allclose(uniform.predict_proba([[2.0, 0.0]]), [[1 / 3, 2 / 3]])


@pytest.mark.parametrize("n_classes", [2, 3])
def test_task_weights_move_each_class_logit_as_the_head_does(n_classes: int) -> None:
    """Grad-CAM's linear path weighs feature maps by these rows: moving the features by dx
    moves every class's log-probability by dx @ w (plus one shared softmax constant), with
    rows in the task's class order, not the head's."""
    X, y = make_classification(120, 6, n_informative=4, n_classes=n_classes, random_state=0)
    names = np.array(["a", "b", "c"])[y]
    head = LogisticHead().fit(X, names)
    task = Task("label", tuple(reversed(sorted(set(names)))))
    weights = task_weights(task, head)
    assert weights is not None and weights.shape == (n_classes, 6)
    order = [list(head.classes_).index(c) for c in task.classes]
    log_p = np.log(head.predict_proba(X))[:, order]
    moved = log_p[:5] - log_p[5:10]
    expected = (X[:5] - X[5:10]) @ weights.T
    shift = moved - expected
    assert np.allclose(shift, shift[:, :1], atol=1e-6)


def test_task_weights_of_a_multi_label_head_and_of_a_non_linear_one() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 5))
    Y = (X[:, :3] + 0.3 * rng.normal(size=(80, 3)) > 0).astype(int)
    head = MultiLabelHead().fit(X, Y)
    weights = task_weights(Task("tags", ("x", "y", "z"), multi_label=True), head)
    assert weights is not None and weights.shape == (3, 5)
    logit = np.log(head.predict_proba(X) / (1 - head.predict_proba(X)))
    assert np.allclose(logit[:5] - logit[5:10], (X[:5] - X[5:10]) @ weights.T, atol=1e-6)
    knn = KNNHead().fit(X, ["a", "b"] * 40)
    assert task_weights(Task("label", ("a", "b")), knn) is None
    knn_tags = MultiLabelHead("knn").fit(X, Y)
    assert task_weights(Task("tags", ("x", "y", "z"), True), knn_tags) is None
