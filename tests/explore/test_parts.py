"""explore's parts on small synthetic embeddings: neighbours (exact and approximate), outlier
scores, clusters, class overlap, exact copies, and the errors a user can cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from headstart.errors import DataError
from headstart.explore.clusters import cluster, reduce
from headstart.explore.duplicates import near_duplicates
from headstart.explore.labels import class_overlap, label_issues
from headstart.explore.outliers import outlier_scores, rank_normalise
from headstart.features.neighbours import knn, normalise


def blobs(n: int, d: int = 64, centres: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised points around ``centres`` random directions, and each point's centre."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d))
    y = np.arange(n) % centres
    return normalise(c[y] + 0.35 * rng.normal(size=(n, d))), y


def brute(x: np.ndarray, k: int) -> np.ndarray:
    sims = normalise(x) @ normalise(x).T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1)[:, :k]


def test_exact_knn_matches_brute_force() -> None:
    x, _ = blobs(300)
    indices, distances = knn(x, 7)
    assert indices.shape == distances.shape == (300, 7)
    assert (indices != np.arange(300)[:, None]).all()  # never its own neighbour
    np.testing.assert_array_equal(indices, brute(x, 7))
    assert (np.diff(distances, axis=1) >= -1e-6).all()  # nearest first
    expected = 1.0 - np.sum(x[:, None, :] * x[indices], axis=2)
    np.testing.assert_allclose(distances, expected, atol=1e-5)


@pytest.mark.parametrize("d", [128, 256])  # 128: index on the vectors; 256: on PCA-128
def test_approximate_knn_finds_most_neighbours(d: int) -> None:
    pytest.importorskip("faiss")
    x, _ = blobs(2000, d=d, centres=20)
    indices, _ = knn(x, 10, exact_below=0)  # force the index
    truth = brute(x, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(indices, truth, strict=True)])
    assert recall > 0.9
    assert (indices != np.arange(2000)[:, None]).all()


def test_knn_with_copies_and_tiny_inputs() -> None:
    x, _ = blobs(50)
    x[1] = x[0]  # an exact copy: distance 0 either way, and still not itself
    indices, distances = knn(x, 3)
    assert indices[0, 0] == 1 and indices[1, 0] == 0 and distances[0, 0] < 1e-6
    one, _ = knn(x[:1], 5)
    assert one.shape == (1, 0)
    two, _ = knn(x[:2], 5)
    assert two.tolist() == [[1], [0]]


def test_rank_normalise() -> None:
    np.testing.assert_allclose(rank_normalise(np.array([3.0, 1.0, 2.0])), [1.0, 0.0, 0.5])
    assert rank_normalise(np.array([7.0])).tolist() == [0.5]


def test_planted_outliers_score_highest() -> None:
    x, _ = blobs(200)
    rng = np.random.default_rng(1)
    x[:4] = normalise(rng.normal(size=(4, x.shape[1])))  # far from every centre
    indices, distances = knn(x, 20)
    scores = outlier_scores(reduce(x), indices, distances)
    for name in ("lof", "knn"):
        assert set(np.argsort(-scores.detectors[name])[:4]) == {0, 1, 2, 3}, name
    # random directions sit between the blobs, where axis-aligned isolation is weak (the real
    # photos of test_analysis are caught by all three); the mean of ranks still ranks them high
    assert scores.score[:4].min() > 0.75
    assert set(scores.detectors) == {"isolation_forest", "lof", "knn"}
    assert all(s.min() >= 0.0 and s.max() <= 1.0 for s in scores.detectors.values())


def test_clusters_recover_blobs() -> None:
    x, y = blobs(250)
    found = cluster(reduce(x), y)
    assert found.metrics["kmeans"]["k"] == 5
    for method in ("kmeans", "agglomerative", "hdbscan"):
        assert found.metrics[method]["nmi"] > 0.8, (method, found.metrics[method])
    for c, rows in found.typical["kmeans"].items():
        assert (found.labels["kmeans"][rows] == c).all()


def test_label_issues_on_features() -> None:
    x, y = blobs(200)
    labels = [f"c{v}" for v in y]
    for row in (0, 1, 2):
        labels[row] = f"c{(y[row] + 1) % 5}"
    found = label_issues(x, labels)
    assert set(found.issue_rows[:3]) == {0, 1, 2}
    assert [found.suggested[i] for i in (0, 1, 2)] == [f"c{y[i]}" for i in (0, 1, 2)]
    with pytest.raises(DataError, match="two images each"):
        label_issues(x[:3], ["a", "a", "b"])
    with pytest.raises(DataError, match="needs labels"):
        label_issues(x)


def test_one_image_classes_are_left_out() -> None:
    x, y = blobs(60, centres=3)
    labels = [f"c{v}" for v in y]
    labels[5] = "lonely"
    found = label_issues(x, labels)
    assert found.skipped_classes == ["lonely"] and 5 not in found.rows


def test_class_overlap_finds_the_confused_pair() -> None:
    proba = np.array([[0.6, 0.4, 0.0], [0.4, 0.6, 0.0], [0.3, 0.7, 0.0], [0.0, 0.1, 0.9]])
    pairs = class_overlap(np.array([0, 0, 1, 2]), proba, ["a", "b", "c"])
    assert [(p.class_a, p.class_b) for p in pairs] == [("a", "b"), ("b", "c")]  # a-c: no mass
    assert pairs[0].score == pytest.approx((0.5 + 0.3) / 2)
    assert pairs[0].examples == 1  # the second row: labelled a, predicted b


def test_exact_copies_are_near_duplicates(tmp_path: Path) -> None:
    x, _ = blobs(10)
    indices, distances = knn(x, 3)
    shas = ["s0", "s1", "s0", *(f"t{i}" for i in range(7))]
    paths = [tmp_path / f"{i}.jpg" for i in range(10)]  # never opened: no candidate passes
    pairs = near_duplicates(paths, shas, indices, distances, threshold=0.999)
    assert [(p.a, p.b, p.exact) for p in pairs] == [(0, 2, True)]
