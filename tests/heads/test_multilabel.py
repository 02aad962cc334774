"""The multi-label head (one binary head per label, thresholds) and the per-task helpers."""

from __future__ import annotations

import numpy as np
import pytest

from headstart.data import Task
from headstart.data.manifest import predicted_labels
from headstart.errors import DataError
from headstart.heads import (
    MultiLabelHead,
    check_label_coverage,
    export_head,
    import_head,
    task_head,
    task_proba,
    task_target,
    thresholds_of,
)

ITEMS = Task("items", ("a", "b", "c"), multi_label=True)
LEFT = Task("left", ("a", "b", "c"))


def _data(seed: int = 0) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(90, 10))
    cells = [tuple(c for j, c in enumerate("abc") if X[i, j] > 0) for i in range(len(X))]
    return X, cells


def test_indicator_targets_give_per_label_probabilities_and_thresholded_answers() -> None:
    X, cells = _data()
    Y = task_target(ITEMS, cells)
    assert Y.shape == (90, 3) and set(np.unique(Y)) == {0, 1}
    head = task_head(ITEMS, "logistic", {}).fit(X, Y)
    assert isinstance(head, MultiLabelHead) and list(head.classes_) == [0, 1, 2]
    proba = task_proba(ITEMS, head, X)
    assert proba.shape == (90, 3) and ((proba >= 0) & (proba <= 1)).all()
    assert not np.allclose(proba.sum(axis=1), 1.0)  # independent labels, not a softmax
    head.thresholds_ = np.array([0.2, 0.5, 0.9])
    np.testing.assert_array_equal(head.predict(X), (proba >= head.thresholds_).astype(int))
    row = np.array([0.3, 0.6, 0.8])
    assert predicted_labels(ITEMS, row, thresholds_of(ITEMS, head)) == ["b", "a"]
    assert predicted_labels(ITEMS, np.array([0.1, 0.1, 0.1]), head.thresholds_) == []


def test_multi_class_helpers_follow_the_task_order() -> None:
    X, cells = _data(1)
    labels = [c[0] if c else "c" for c in cells]
    head = task_head(LEFT, "logistic", {}).fit(X, labels)
    proba = task_proba(LEFT, head, X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert thresholds_of(LEFT, head) is None
    assert predicted_labels(LEFT, proba[0], None) == [LEFT.classes[int(proba[0].argmax())]]


def test_a_label_on_every_row_is_a_one_line_error_naming_it() -> None:
    with pytest.raises(DataError, match="label 'b' of 'items' is on every training image"):
        check_label_coverage(ITEMS, [("a", "b"), ("b",), ("b", "c")])
    with pytest.raises(DataError, match="Label 1 has 1 class"):
        MultiLabelHead().fit(
            np.zeros((4, 2)) + np.arange(4)[:, None], [[0, 1], [1, 1], [0, 1], [1, 1]]
        )


@pytest.mark.parametrize("kind", ["logistic", "knn", "mlp"])
def test_export_import_round_trip_keeps_thresholds(kind: str) -> None:
    X, cells = _data(2)
    head = MultiLabelHead(kind).fit(X, task_target(ITEMS, cells))
    head.thresholds_ = np.array([0.3, 0.4, 0.7])
    arrays, meta = export_head(head)
    assert meta["kind"] == "multilabel" and meta["params"]["kind"] == kind
    back = import_head(arrays, meta)
    np.testing.assert_allclose(back.predict_proba(X), head.predict_proba(X), atol=1e-12)
    np.testing.assert_array_equal(back.thresholds_, head.thresholds_)
    np.testing.assert_array_equal(back.predict(X), head.predict(X))
