"""Bagged heads: stratified replicas, mean probability, round trip, torch parity."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification
from sklearn.utils.estimator_checks import parametrize_with_checks

from headstart import errors
from headstart.heads import BaggedHead, create_head, export_head, import_head, refit_factory
from headstart.heads.bagging import stratified_bootstrap
from headstart.heads.torch_head import head_to_torch


@parametrize_with_checks([BaggedHead(n_estimators=3)])
def test_sklearn_compatible(estimator: Any, check: Any) -> None:
    check(estimator)


def _data(n: int = 160, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    X, y = make_classification(
        n + 40, 12, n_informative=5, n_classes=k, class_sep=1.2, random_state=seed
    )
    names = np.array(["ant", "bee", "cat", "dog"])[y]
    X = X.astype(np.float32)
    return X[:n], names[:n], X[n:]


def test_every_replica_sees_every_class_and_replicas_differ() -> None:
    X, y, queries = _data()
    # a class of two rows: a plain bootstrap would leave it out of some replicas
    keep = np.concatenate([np.flatnonzero(y != "cat"), np.flatnonzero(y == "cat")[:2]])
    X, y = X[keep], y[keep]
    head = BaggedHead("knn", n_estimators=6).fit(X, y)
    assert len(head.estimators_) == len(head.samples_) == 6
    for member, rows in zip(head.estimators_, head.samples_, strict=True):
        assert set(y[rows]) == {"ant", "bee", "cat"}
        assert list(member.classes_) == list(head.classes_)
        assert len(rows) == len(y) and len(set(rows.tolist())) < len(y)  # with replacement
    assert len({tuple(rows.tolist()) for rows in head.samples_}) == 6
    probas = [member.predict_proba(queries) for member in head.estimators_]
    assert not np.allclose(probas[0], probas[1])
    np.testing.assert_allclose(head.predict_proba(queries), np.mean(probas, axis=0))


def test_stratified_bootstrap_sizes() -> None:
    rng = np.random.default_rng(0)
    y_idx = np.array([0] * 50 + [1] * 9 + [2])
    rows = stratified_bootstrap(y_idx, 0.5, rng)
    assert np.bincount(y_idx[rows]).tolist() == [25, 4, 1]  # round(4.5) = 4; at least one


def test_logistic_members_share_one_c_chosen_on_all_rows() -> None:
    X, y, _ = _data()
    head = BaggedHead(n_estimators=4).fit(X, y)
    chosen = {member.C_ for member in head.estimators_}
    assert len(chosen) == 1 and head.base_params_ == {"Cs": [chosen.pop()]}
    assert head.base_params is None  # the constructor argument is left alone
    # and refit_factory hands the fitted parameters on
    clone = refit_factory(head)()
    assert clone.base_params == head.base_params_ and not hasattr(clone, "estimators_")


@pytest.mark.parametrize(
    ("base", "params"),
    [("logistic", {"Cs": (0.3,)}), ("knn", {"n_neighbors": 4}), ("mlp", {"max_iter": 20})],
)
def test_round_trip_and_torch_parity(base: str, params: dict[str, Any]) -> None:
    X, y, queries = _data(k=3, seed=1)
    head = create_head("bagging", base=base, base_params=params, n_estimators=3).fit(X, y)
    arrays, meta = export_head(head)
    assert all(key.split("/", 1)[0] in {"0", "1", "2"} for key in arrays)
    rebuilt = import_head({k: a.copy() for k, a in arrays.items()}, json.loads(json.dumps(meta)))
    assert isinstance(rebuilt, BaggedHead) and rebuilt.base == base
    expected = head.predict_proba(queries)
    np.testing.assert_array_equal(rebuilt.predict_proba(queries), expected)
    with torch.no_grad():
        logits = head_to_torch(rebuilt)(torch.from_numpy(queries))
    np.testing.assert_allclose(torch.softmax(logits, dim=1).double().numpy(), expected, atol=1e-5)


def test_binary_bagging_of_boosted_trees() -> None:
    X, y, queries = _data(k=2, seed=2)
    head = BaggedHead("lightgbm", {"n_estimators": 5, "n_jobs": 1}, n_estimators=2).fit(X, y)
    seeds = {member.random_state for member in head.estimators_}
    assert len(seeds) == 2  # each member its own seed
    with torch.no_grad():
        logits = head_to_torch(head)(torch.from_numpy(queries))
    got = torch.softmax(logits, dim=1).double().numpy()
    np.testing.assert_allclose(got, head.predict_proba(queries), atol=1e-5)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"base": "svm"}, r"unknown bagging base 'svm'; valid: .*knn"),
        ({"base": "bagging"}, "unknown bagging base 'bagging'"),
        ({"n_estimators": 0}, "n_estimators"),
        ({"max_samples": 0.0}, "max_samples"),
        ({"base_params": {"n_neighbours": 3}, "base": "knn"}, "'n_neighbours'"),
        ({"base_params": [1, 2]}, "base_params"),
    ],
)
def test_bad_params_are_one_line_config_errors(params: dict[str, Any], match: str) -> None:
    X, y, _ = _data(n=60)
    with pytest.raises(errors.ConfigError, match=match) as info:
        BaggedHead(**params).fit(X, y)
    assert "\n" not in str(info.value)
