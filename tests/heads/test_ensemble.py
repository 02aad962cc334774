"""Ensembles: combination methods, out-of-fold machinery (no stacking leakage), export, torch."""

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
from headstart.heads import (
    EnsembleHead,
    KNNHead,
    LightGBMHead,
    LogisticHead,
    MultiLabelHead,
    export_head,
    fit_stacker,
    greedy_selection,
    import_head,
    out_of_fold_proba,
    refit_factory,
    stack_features,
)
from headstart.heads import ensemble as ensemble_module
from headstart.heads.ensemble import TIE_BREAK
from headstart.heads.torch_head import head_to_torch
from onnx_probe import onnx_proba


def _poor_by_design(estimator: Any) -> dict[str, str]:
    return {"check_classifiers_train": "the only member reads column 0 alone: a poor score"}


@parametrize_with_checks(
    [EnsembleHead([(0, 1, KNNHead(n_neighbors=3))], method="stack", n_folds=2)],
    expected_failed_checks=_poor_by_design,
)
def test_sklearn_compatible(estimator: Any, check: Any) -> None:
    check(estimator)


def _data(
    n: int = 240, seed: int = 0, noise: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """12 informative columns, then ``noise`` columns of pure noise; a held-out part."""
    X, y = make_classification(
        n + 120, 12, n_informative=6, n_redundant=0, n_classes=3, class_sep=1.0, random_state=seed
    )
    rng = np.random.default_rng(seed)
    X = np.hstack([X, rng.normal(size=(len(X), noise))]).astype(np.float32)
    names = np.array(["ant", "bee", "cat"])[y]
    return X[:n], names[:n], X[n:], names[n:]


def _torch_proba(module: torch.nn.Module, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(module(torch.from_numpy(X)), dim=1).double().numpy()


def _members() -> list[tuple[int, int, Any]]:
    return [
        (0, 12, LogisticHead(Cs=(0.1,))),
        (0, 20, KNNHead(n_neighbors=5)),
        (12, 20, LightGBMHead(n_estimators=8, n_jobs=1)),
    ]


# --- out-of-fold probabilities ----------------------------------------------------------


def test_out_of_fold_rows_are_predicted_by_heads_that_never_saw_them() -> None:
    X, y, _, _ = _data()
    oof = out_of_fold_proba(lambda: KNNHead(n_neighbors=1), X, y, n_folds=4)
    in_sample = KNNHead(n_neighbors=1).fit(X, y).predict_proba(X)
    classes = np.unique(y)
    assert oof.shape == (len(y), 3)
    assert np.mean(classes[in_sample.argmax(1)] == y) == 1.0  # memorised
    assert np.mean(classes[oof.argmax(1)] == y) < 0.9  # honest


def test_a_class_missing_from_a_fold_gets_probability_zero_there() -> None:
    X, y, _, _ = _data(n=60)
    y = y.copy()
    y[7] = "zebra"  # one row: it is in some fold's test part, so that fold never saw it
    oof = out_of_fold_proba(lambda: LogisticHead(Cs=(1.0,)), X, y, n_folds=5)
    assert oof.shape == (60, 4)  # columns: ant, bee, cat, zebra (sorted)
    assert oof[7, 3] == 0.0 and np.allclose(oof.sum(axis=1), 1.0)


def test_refit_factory_fixes_the_chosen_c() -> None:
    X, y, _, _ = _data(n=120)
    head = LogisticHead().fit(X, y)
    make = refit_factory(head)
    first, second = make(), make()
    assert first is not second and first.Cs == (head.C_,) and not hasattr(first, "coef_")
    assert refit_factory(KNNHead(n_neighbors=3).fit(X, y))().get_params()["n_neighbors"] == 3


# --- greedy selection -----------------------------------------------------------------


def test_greedy_selection_prefers_the_informative_member() -> None:
    X, y, _, _ = _data()
    useful = out_of_fold_proba(lambda: LogisticHead(Cs=(0.1,)), X[:, :12], y)
    noise = out_of_fold_proba(lambda: LogisticHead(Cs=(0.1,)), X[:, 12:], y)
    for metric in ("log_loss", "accuracy"):
        weights = greedy_selection([noise, useful], y, rounds=20, metric=metric)  # type: ignore[arg-type]
        assert weights.sum() == pytest.approx(1.0)
        assert weights[1] >= 0.8 and np.all(weights * 20 == np.round(weights * 20))


def test_greedy_selection_bad_input() -> None:
    p = np.full((4, 2), 0.5)
    with pytest.raises(errors.ConfigError, match="rounds"):
        greedy_selection([p], ["a", "b", "a", "b"], rounds=0)
    with pytest.raises(errors.ConfigError, match="2 columns but there are 3 classes"):
        greedy_selection([p], ["a", "b", "c", "b"])
    with pytest.raises(errors.ConfigError, match="alike"):
        greedy_selection([p, np.ones((3, 2))], ["a", "b", "a", "b"])


# --- stacking never learns from in-sample probabilities -------------------------------


def _linear_data(seed: int = 0, n: int = 300) -> tuple[np.ndarray, ...]:
    """Labels linear in 4 of 40 columns: easy for a linear head, hard for 1-NN (the other 36
    columns swamp the distances)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n + 150, 40)).astype(np.float32)
    scores = X[:, :4] @ rng.normal(size=(4, 3)) + 0.3 * rng.normal(size=(n + 150, 3))
    y = np.array(["ant", "bee", "cat"])[np.argmax(scores, axis=1)]
    return X[:n], y[:n], X[n:], y[n:]


def test_stacker_trained_out_of_fold_does_not_trust_the_memoriser() -> None:
    """A 1-NN member is perfect on its own training rows.  Stack features from in-sample
    probabilities make it look like the member to follow; out-of-fold ones show what it is
    worth (about half right), so the stacker follows the logistic member instead."""
    X, y, X_test, y_test = _linear_data()
    members = [LogisticHead().fit(X, y), KNNHead(n_neighbors=1).fit(X, y)]
    in_sample = [m.predict_proba(X) for m in members]
    oof = [out_of_fold_proba(refit_factory(m), X, y) for m in members]
    leaky, honest = fit_stacker(in_sample, y), fit_stacker(oof, y)

    def knn_share(stacker: LogisticHead) -> float:
        coef = np.abs(stacker.coef_)  # per stack column (standardised): members x classes
        return float(coef[:, 3:].sum() / coef.sum())

    assert knn_share(leaky) > 0.6 and knn_share(honest) < 0.15
    # where the members disagree on held-out rows, whom does each stacker follow?
    probas = [m.predict_proba(X_test) for m in members]
    features = stack_features(probas)
    knn_says = probas[1].argmax(axis=1)
    disagree = probas[0].argmax(axis=1) != knn_says
    follows = [
        np.mean(s.predict_proba(features).argmax(1)[disagree] == knn_says[disagree])
        for s in (leaky, honest)
    ]
    assert follows[0] > 0.9 and follows[1] < 0.2
    accuracy = [np.mean(s.predict(features) == y_test) for s in (leaky, honest)]
    assert accuracy[1] > accuracy[0] + 0.1
    # the same lesson for greedy selection: in-sample it picks the memoriser alone
    assert greedy_selection(in_sample, y)[1] == 1.0
    assert greedy_selection(oof, y)[0] >= 0.9


@pytest.mark.parametrize("method", ["stack", "select"])
def test_fit_learns_the_combination_from_out_of_fold_probabilities(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y, _, _ = _data()
    seen: list[list[np.ndarray]] = []
    target = "fit_stacker" if method == "stack" else "greedy_selection"
    real = getattr(ensemble_module, target)

    def spy(probas: list[np.ndarray], *args: Any, **kwargs: Any) -> Any:
        seen.append([np.array(p) for p in probas])
        return real(probas, *args, **kwargs)

    monkeypatch.setattr(ensemble_module, target, spy)
    members = [(0, 20, LogisticHead(Cs=(0.1,))), (0, 20, KNNHead(n_neighbors=1))]
    head = EnsembleHead(members, method=method, n_folds=4, random_state=3).fit(X, y)  # type: ignore[arg-type]
    (given,) = seen
    for (a, b, member), probas in zip(members, given, strict=True):
        expected = out_of_fold_proba(
            refit_factory(member.fit(X, y)), X[:, a:b], y, n_folds=4, seed=3
        )
        np.testing.assert_array_equal(probas, expected)
    in_sample = head.members_[1].predict_proba(X)
    assert not np.allclose(given[1], in_sample)


# --- combination methods ----------------------------------------------------------------


def _controlled_member(labels: list[str]) -> KNNHead:
    """A uniform kNN whose every neighbour is one of its ten identical rows: its probabilities
    are the label shares, whatever the query."""
    return KNNHead(n_neighbors=10, weights="uniform").fit(np.ones((10, 1)), labels)


def test_hard_vote_ties_go_to_the_soft_mean() -> None:
    sure_ant = _controlled_member(["ant"] * 9 + ["bee"])  # ant 0.9
    bee = _controlled_member(["ant"] * 4 + ["bee"] * 6)  # bee 0.6
    head = EnsembleHead.of([(0, 1, sure_ant), (1, 2, bee)], "hard")
    proba = head.predict_proba(np.ones((1, 2)))
    soft = np.array([0.65, 0.35])
    np.testing.assert_allclose(proba[0], (1 - TIE_BREAK) * 0.5 + TIE_BREAK * soft)
    assert head.predict(np.ones((1, 2)))[0] == "ant"
    weighted = EnsembleHead.of([(0, 1, sure_ant), (1, 2, bee)], "hard", weights=[1, 3])
    assert weighted.predict(np.ones((1, 2)))[0] == "bee"
    vote = EnsembleHead.of([(0, 1, sure_ant), (1, 2, bee)], "vote", weights=[1, 3])
    np.testing.assert_allclose(vote.predict_proba(np.ones((1, 2)))[0], [0.525, 0.475])


@pytest.mark.parametrize("method", ["vote", "hard", "select", "stack"])
def test_round_trip_and_torch_parity(method: str) -> None:
    X, y, queries, _ = _data(seed=1)
    head = EnsembleHead(_members(), method=method, n_folds=3).fit(X, y)  # type: ignore[arg-type]
    assert head.weights_.sum() == pytest.approx(1.0)
    assert [p.shape for p in head.member_probas(queries)] == [(len(queries), 3)] * 3
    arrays, meta = export_head(head)
    assert ("meta/coef" in arrays) == (method == "stack")
    rebuilt = import_head({k: a.copy() for k, a in arrays.items()}, json.loads(json.dumps(meta)))
    expected = head.predict_proba(queries)
    np.testing.assert_array_equal(rebuilt.predict_proba(queries), expected)
    np.testing.assert_allclose(_torch_proba(head_to_torch(rebuilt), queries), expected, atol=1e-5)


@pytest.mark.parametrize("method", ["hard", "stack"])
@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")
def test_onnx_export_matches_head(method: str, tmp_path: Path) -> None:
    X, y, queries, _ = _data(seed=2)
    head = EnsembleHead(_members(), method=method, n_folds=3).fit(X, y)  # type: ignore[arg-type]
    path = tmp_path / "ensemble.onnx"
    proba = onnx_proba(head_to_torch(head, classes=["cat", "ant", "bee"]), queries, path)
    np.testing.assert_allclose(proba, head.predict_proba(queries)[:, [2, 0, 1]], atol=1e-5)


def test_ensemble_in_a_bundle(tmp_path: Path) -> None:
    from headstart.backbones import resolve_backbone
    from headstart.bundle import read_bundle, write_bundle
    from headstart.data import Task

    X, y, queries, _ = _data(seed=5)
    head = EnsembleHead(_members(), method="stack", n_folds=3).fit(X, y)  # type: ignore[arg-type]
    task = Task("label", ("ant", "bee", "cat"))
    bundle = write_bundle(
        tmp_path / "m",
        tasks=[task],
        heads={"label": head},
        backbone=resolve_backbone("mobilenet_v2"),
    )
    rebuilt = read_bundle(bundle).heads["label"]
    np.testing.assert_array_equal(rebuilt.predict_proba(queries), head.predict_proba(queries))


# --- bad input ------------------------------------------------------------------------


def test_of_checks_its_members() -> None:
    X, y, _, _ = _data(n=90)
    a = LogisticHead(Cs=(1.0,)).fit(X[:, :12], y)
    other = LogisticHead(Cs=(1.0,)).fit(X[:, :12], np.where(y == "cat", "dog", y))
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (
            [(0, 12, a), (0, 12, other)],
            {},
            r"disagree on classes: member 1 has \['ant', 'bee', 'dog'\]",
        ),
        ([(0, 12, a)], {"method": "bagged"}, "unknown ensemble method 'bagged'; known: vote"),
        ([(0, 12, a)], {"method": "select"}, "needs weights from greedy_selection"),
        ([(0, 12, a)], {"method": "stack"}, "needs a meta head from fit_stacker"),
        ([(0, 12, a)], {"meta": a}, "only for method 'stack'"),
        ([(0, 10, a)], {}, r"fitted on 12 features but reads columns \[0, 10\)"),
        ([(5, 5, a)], {}, "0 <= start < stop"),
        ([(0, 12, a)], {"weights": [1, 2]}, "weights must be 1 finite numbers"),
        ([], {}, "one or more"),
    ]
    for members, kwargs, match in cases:
        with pytest.raises(errors.ConfigError, match=match) as info:
            EnsembleHead.of(members, **{"method": "vote", **kwargs})
        assert "\n" not in str(info.value)


def test_multi_label_members_are_refused() -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    tags = MultiLabelHead().fit(X, (X[:, :2] > 0).astype(int))
    with pytest.raises(
        errors.ConfigError, match="ensembles of multi-label tasks are not supported"
    ):
        EnsembleHead.of([(0, 4, tags)], "vote")
    with pytest.raises(errors.ConfigError, match="multi-label"):
        EnsembleHead([(0, 4, MultiLabelHead())]).fit(X, rng.integers(0, 2, 60))


def test_a_member_beyond_the_features_and_a_damaged_meta() -> None:
    X, y, _, _ = _data(n=90)
    with pytest.raises(errors.ConfigError, match="columns up to 30 but X has 20"):
        EnsembleHead([(0, 30, KNNHead())]).fit(X, y)
    head = EnsembleHead([(0, 12, KNNHead()), (12, 20, KNNHead())]).fit(X, y)
    arrays, meta = export_head(head)
    bad = json.loads(json.dumps(meta))
    bad["state"]["slices"] = [[0, 12]]
    with pytest.raises(errors.BundleError, match="members, slices and weights"):
        import_head(arrays, bad)
    bad = json.loads(json.dumps(meta))
    bad["state"]["slices"] = [[0, 12], [12, 19]]
    with pytest.raises(errors.BundleError, match="inconsistent"):
        import_head(arrays, bad)
