"""head_to_torch: the torch (and ONNX) version of each fitted head predicts what the head does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from headstart.bundle import read_bundle, write_bundle
from headstart.data import Task
from headstart.errors import ConfigError
from headstart.heads import create_head, export_head, import_head
from headstart.heads.torch_head import head_to_torch
from onnx_probe import onnx_proba

HEADS: list[tuple[str, dict[str, Any]]] = [
    ("logistic", {"Cs": [0.1]}),
    ("mlp", {"hidden_layer_sizes": (16,), "max_iter": 30}),
    ("mlp", {"hidden_layer_sizes": (8, 8), "activation": "tanh", "max_iter": 30}),
    ("knn", {"n_neighbors": 5}),
    ("knn", {"n_neighbors": 3, "weights": "uniform"}),
]


def _data(n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Separable-ish float32 features (like embeddings: non-negative) and held-out queries."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 2, size=(n_classes, 32))
    y = np.repeat(np.array([f"c{i}" for i in range(n_classes)]), 12)
    X = centres[np.repeat(np.arange(n_classes), 12)] + rng.normal(0, 0.7, size=(len(y), 32))
    # Fresh draws around every class centre: near, but never equal to, training rows.
    queries = centres[np.arange(25) % n_classes] + rng.normal(0, 1.0, size=(25, 32))
    return np.abs(X).astype(np.float32), y, np.abs(queries).astype(np.float32)


def _torch_proba(module: torch.nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(module(torch.from_numpy(X)), dim=1).double().numpy()


@pytest.mark.parametrize("n_classes", [2, 3])
@pytest.mark.parametrize(("kind", "params"), HEADS)
def test_softmax_of_logits_equals_predict_proba(
    kind: str, params: dict[str, Any], n_classes: int
) -> None:
    X, y, queries = _data(n_classes)
    head = create_head(kind, **params).fit(X, y)
    module = head_to_torch(head)
    expected = head.predict_proba(queries)
    got = _torch_proba(module, queries)
    assert got.shape == (len(queries), n_classes)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # The queries must exercise the classes, else agreement says little.
    assert len(set(np.argmax(expected, axis=1))) > 1


@pytest.mark.parametrize(("kind", "params"), HEADS[:4])
def test_imported_head_converts_like_the_fitted_one(
    kind: str, params: dict[str, Any], tmp_path: Path
) -> None:
    from headstart.backbones import resolve_backbone

    X, y, queries = _data(3, seed=1)
    head = create_head(kind, **params).fit(X, y)
    # A real bundle round trip: safetensors arrays + JSON meta, no pickle.
    ref = resolve_backbone("mobilenet_v2")
    task = Task("label", ("c0", "c1", "c2"))
    bundle = write_bundle(tmp_path / "m", tasks=[task], heads={"label": head}, backbone=ref)
    imported = read_bundle(bundle).heads["label"]
    got = _torch_proba(head_to_torch(imported), queries)
    np.testing.assert_allclose(got, head.predict_proba(queries), atol=1e-5)


def test_classes_reorders_columns() -> None:
    X, y, queries = _data(3)
    head = create_head("logistic", Cs=[0.1]).fit(X, y)
    module = head_to_torch(head, classes=["c2", "c0", "c1"])
    np.testing.assert_allclose(
        _torch_proba(module, queries), head.predict_proba(queries)[:, [2, 0, 1]], atol=1e-5
    )
    with pytest.raises(ConfigError, match="not a reordering"):
        head_to_torch(head, classes=["c0", "c1", "zebra"])


def test_gradients_reach_the_features() -> None:
    """Grad-CAM needs d(logit)/d(features), for the kNN head too."""
    X, y, queries = _data(3)
    for kind, params in HEADS[:4]:
        module = head_to_torch(create_head(kind, **params).fit(X, y))
        x = torch.from_numpy(queries[:4]).requires_grad_(True)
        module(x)[:, 0].sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_unfitted_head_is_refused() -> None:
    with pytest.raises(Exception, match="not fitted"):
        head_to_torch(create_head("logistic"))


@pytest.mark.parametrize(("kind", "params"), [HEADS[0], HEADS[2], HEADS[3]])
def test_onnx_export_matches_head(kind: str, params: dict[str, Any], tmp_path: Path) -> None:
    X, y, queries = _data(3, seed=2)
    head = import_head(*export_head(create_head(kind, **params).fit(X, y)))
    module = head_to_torch(head)
    path = tmp_path / "head.onnx"
    proba = onnx_proba(module, queries, path)
    np.testing.assert_allclose(proba, head.predict_proba(queries), atol=1e-5)


def test_a_multi_label_head_gives_one_logit_per_label() -> None:
    from headstart.heads import MultiLabelHead
    from headstart.heads.torch_head import task_module

    rng = np.random.default_rng(3)
    X = rng.normal(size=(80, 12)).astype(np.float32)
    Y = (X[:, :4] + 0.3 * rng.normal(size=(80, 4)) > 0).astype(np.int8)
    for kind in ("logistic", "knn", "mlp"):
        head = MultiLabelHead(kind).fit(X, Y)
        module = task_module(Task("items", ("a", "b", "c", "d"), multi_label=True), head)
        with torch.no_grad():
            got = torch.sigmoid(module(torch.from_numpy(X))).double().numpy()
        np.testing.assert_allclose(got, head.predict_proba(X), atol=1e-5)
