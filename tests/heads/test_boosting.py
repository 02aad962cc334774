"""Boosted tree heads (hgb, lightgbm): library parity, pickle-free round trip, torch and ONNX."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.utils.estimator_checks import parametrize_with_checks

from headstart import errors
from headstart.heads import HGBHead, LightGBMHead, create_head, export_head, import_head
from headstart.heads.torch_head import head_to_torch
from onnx_probe import onnx_proba

# One thread: on a small, busy machine OpenMP threads wait on each other far longer than
# these tiny fits take.
KINDS: list[tuple[str, dict[str, Any]]] = [
    ("hgb", {"max_iter": 15, "n_jobs": 1}),
    ("lightgbm", {"n_estimators": 15, "n_jobs": 1}),
]


@parametrize_with_checks([HGBHead(max_iter=10, n_jobs=1), LightGBMHead(n_estimators=10, n_jobs=1)])
def test_sklearn_compatible(estimator: Any, check: Any) -> None:
    check(estimator)


def _data(n_classes: int, n: int = 240, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float32 features, string labels and held-out queries (fresh draws)."""
    X, y = make_classification(
        n + 60, 16, n_informative=6, n_classes=n_classes, class_sep=1.5, random_state=seed
    )
    names = np.array(["ant", "bee", "cat", "dog"])[y]
    X = X.astype(np.float32)
    return X[:n], names[:n], X[n:]


def _torch_proba(module: torch.nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(module(torch.from_numpy(X)), dim=1).double().numpy()


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize(("kind", "params"), KINDS)
def test_predictions_match_the_library(kind: str, params: dict[str, Any], n_classes: int) -> None:
    """The head walks its own exported arrays; the library's model gives the same numbers."""
    X, y, queries = _data(n_classes)
    head = create_head(kind, **params).fit(X, y)
    y_idx = np.unique(y, return_inverse=True)[1]
    if kind == "hgb":
        library = head.sklearn_model(y_idx).fit(X, y_idx)
    else:
        library = head.lightgbm_model().fit(X, y_idx)
    np.testing.assert_allclose(
        head.predict_proba(queries), library.predict_proba(queries), atol=1e-12
    )
    assert len(head.roots_) == head.n_iter_ * (1 if n_classes == 2 else n_classes)


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize(("kind", "params"), KINDS)
def test_round_trip_through_json_is_identical(
    kind: str, params: dict[str, Any], n_classes: int
) -> None:
    X, y, queries = _data(n_classes)
    head = create_head(kind, class_weight="balanced", **params).fit(X, y)
    arrays, meta = export_head(head)
    assert set(arrays) == {"roots", "feature", "threshold", "left", "right", "value"} | {
        "tree_class",
        "baseline",
    }
    assert all(a.dtype.kind in "if" for a in arrays.values())  # plain numbers, no objects
    rebuilt = import_head({k: a.copy() for k, a in arrays.items()}, json.loads(json.dumps(meta)))
    assert type(rebuilt) is type(head) and rebuilt.get_params() == head.get_params()
    np.testing.assert_array_equal(rebuilt.predict_proba(queries), head.predict_proba(queries))
    assert rebuilt.n_iter_ == head.n_iter_


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize(("kind", "params"), KINDS)
def test_torch_module_matches_predict_proba(
    kind: str, params: dict[str, Any], n_classes: int
) -> None:
    X, y, queries = _data(n_classes, seed=1)
    head = create_head(kind, **params).fit(X, y)
    expected = head.predict_proba(queries)
    got = _torch_proba(head_to_torch(head), queries)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert len(set(expected.argmax(axis=1))) == n_classes  # the queries reach every class


@pytest.mark.parametrize(("kind", "params"), KINDS)
def test_torch_decides_like_numpy_at_the_thresholds(kind: str, params: dict[str, Any]) -> None:
    """float32 features one step either side of (and at) each float64 threshold go the same
    way in torch as in the head: the module's thresholds are rounded down, not to nearest."""
    X, y, queries = _data(3, seed=2)
    head = create_head(kind, **params).fit(X, y)
    internal = np.flatnonzero(head.left_ != np.arange(len(head.left_)))[:40]
    rows = []
    for node in internal:
        t32 = np.float32(head.threshold_[node])
        for value in (np.nextafter(t32, np.float32(-np.inf)), t32, np.nextafter(t32, np.inf)):
            row = queries[node % len(queries)].copy()
            row[head.feature_[node]] = value
            rows.append(row)
    edges = np.asarray(rows, dtype=np.float32)
    np.testing.assert_allclose(
        _torch_proba(head_to_torch(head), edges), head.predict_proba(edges), atol=1e-5
    )


@pytest.mark.parametrize(("kind", "params"), KINDS)
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_onnx_export_matches_head(kind: str, params: dict[str, Any], tmp_path: Path) -> None:
    X, y, queries = _data(3, seed=3)
    head = import_head(*export_head(create_head(kind, **params).fit(X, y)))
    path = tmp_path / "head.onnx"
    proba = onnx_proba(head_to_torch(head), queries, path)
    np.testing.assert_allclose(proba, head.predict_proba(queries), atol=1e-5)


def test_hgb_early_stopping_is_skipped_when_a_class_is_too_small() -> None:
    X, y, _ = _data(3)
    keep = np.concatenate([np.flatnonzero(y != "cat"), np.flatnonzero(y == "cat")[:1]])
    head = HGBHead(max_iter=20, early_stopping=True, n_jobs=1).fit(X[keep], y[keep])
    assert head.n_iter_ == 20 and list(head.classes_) == ["ant", "bee", "cat"]
    stopped = HGBHead(max_iter=200, early_stopping=True, learning_rate=0.5, n_jobs=1).fit(X, y)
    assert stopped.n_iter_ < 200


@pytest.mark.parametrize(
    ("kind", "params", "match"),
    [
        ("hgb", {"max_features": 0.0}, "max_features"),
        ("hgb", {"early_stopping": "sometimes"}, "early_stopping"),
        ("hgb", {"class_weight": "auto"}, "class_weight"),
        ("hgb", {"n_jobs": 0}, "n_jobs"),
        ("hgb", {"max_leaf_nodes": 1}, "max_leaf_nodes"),
        ("lightgbm", {"colsample_bytree": 1.5}, "colsample_bytree"),
        ("lightgbm", {"subsample": -1}, "subsample"),
        ("lightgbm", {"class_weight": {"zebra": 2.0}}, "zebra"),
        ("lightgbm", {"num_leaves": 1}, "num_leaves"),
    ],
)
def test_bad_params_are_one_line_config_errors(
    kind: str, params: dict[str, Any], match: str
) -> None:
    X, y, _ = _data(2, n=80)
    with pytest.raises(errors.ConfigError, match=match) as info:
        create_head(kind, **{"n_jobs": 1, **params}).fit(X, y)
    assert "\n" not in str(info.value)


def test_unknown_param_names_the_valid_ones() -> None:
    with pytest.raises(errors.ConfigError, match=r"'n_estimators'.*valid: .*max_iter"):
        create_head("hgb", n_estimators=10)


def test_a_damaged_forest_is_a_bundle_error() -> None:
    X, y, _ = _data(3, n=80)
    arrays, meta = export_head(LightGBMHead(n_estimators=3, n_jobs=1).fit(X, y))
    broken = {**arrays, "left": arrays["left"] + 10_000}
    with pytest.raises(errors.BundleError, match="consistent forest"):
        import_head(broken, meta)
    with pytest.raises(errors.BundleError, match="'tree_class'"):
        import_head({k: v for k, v in arrays.items() if k != "tree_class"}, meta)
