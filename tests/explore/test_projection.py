"""2-D maps of the embeddings: one (N, 2) array per method, the same for the same seed, blind
to each row's length, with UMAP left out (and why) where umap-learn cannot be imported, large
inputs fitted on a sample, and t-SNE/UMAP points read back from a verified cache."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from headstart.errors import ConfigError
from headstart.explore import projection
from headstart.explore.projection import project, projections, umap_unavailable


def _clusters(n: int = 60, dims: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three well-separated groups of rows, and each row's group."""
    rng = np.random.default_rng(seed)
    groups = np.arange(n) % 3
    centres = rng.standard_normal((3, dims)) * 4
    return (centres[groups] + rng.standard_normal((n, dims))).astype(np.float32), groups


@pytest.fixture()
def no_umap(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import umap`` fails as it does where umap-learn is not installed."""
    monkeypatch.setitem(sys.modules, "umap", None)


def test_each_method_gives_one_point_per_row_the_same_for_the_same_seed(no_umap: None) -> None:
    x, groups = _clusters()
    first = project(x, methods=("pca", "tsne"), seed=3)
    again = project(x, methods=("pca", "tsne"), seed=3)
    assert list(first) == ["pca", "tsne"]
    for method, points in first.items():
        assert points.shape == (len(x), 2) and np.all(np.isfinite(points))
        np.testing.assert_array_equal(points, again[method])
    # the map shows the groups: each point's nearest neighbour on it is of its own group
    for points in first.values():
        d = np.linalg.norm(points[:, None] - points[None], axis=2)
        np.fill_diagonal(d, np.inf)
        assert np.mean(groups[d.argmin(axis=1)] == groups) > 0.9


def test_features_are_l2_normalised_first() -> None:
    x, _ = _clusters(30)
    scaled = x * np.random.default_rng(1).uniform(0.1, 10, (len(x), 1)).astype(np.float32)
    a, b = project(x, methods=("pca",))["pca"], project(scaled, methods=("pca",))["pca"]
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_umap_is_left_out_with_a_reason_when_it_cannot_be_imported(no_umap: None) -> None:
    reason = umap_unavailable()
    assert reason is not None and "umap-learn is not installed" in reason
    x, _ = _clusters(20)
    maps = projections(x, methods=("pca", "umap"))
    assert list(maps.coords) == ["pca"]
    assert maps.notes["umap"] == reason
    assert list(project(x, methods=("umap",))) == []


def test_umap_when_installed() -> None:
    pytest.importorskip("umap", reason="umap-learn is not installed (an optional extra)")
    x, _ = _clusters(40)
    maps = projections(x, methods=("umap",), seed=0)
    assert maps.coords["umap"].shape == (40, 2) and "umap" not in maps.notes
    np.testing.assert_array_equal(maps.coords["umap"], project(x, methods=("umap",))["umap"])


def test_large_inputs_are_fitted_on_a_sample_and_the_rest_placed_beside_it() -> None:
    x, groups = _clusters(90)
    maps = projections(x, methods=("tsne",), max_points=30)
    points = maps.coords["tsne"]
    assert points.shape == (90, 2) and np.all(np.isfinite(points))
    assert "fitted on 30 of 90 images" in maps.notes["tsne"]
    centre = np.array([points[groups == g].mean(axis=0) for g in range(3)])
    nearest_centre = np.linalg.norm(points[:, None] - centre[None], axis=2).argmin(axis=1)
    assert np.mean(nearest_centre == groups) > 0.9  # placed rows land in their own group


def test_tiny_or_constant_inputs_are_drawn_at_the_centre() -> None:
    for x in (np.ones((1, 8)), np.ones((2, 8)), np.ones((5, 8))):
        maps = projections(x, methods=("pca", "tsne"))
        for points in maps.coords.values():
            np.testing.assert_array_equal(points, np.zeros((len(x), 2)))
        assert "too few distinct points" in maps.notes["tsne"]


def test_bad_arguments_are_refused_with_what_is_valid() -> None:
    x, _ = _clusters(10)
    with pytest.raises(ConfigError, match="unknown projection 'mds': choose from pca, tsne, umap"):
        project(x, methods=("pca", "mds"))
    with pytest.raises(ConfigError, match="2-D"):
        project(x[0])
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ConfigError, match="NaN"):
        project(bad)


def test_t_sne_points_are_cached_and_a_damaged_entry_is_computed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, _ = _clusters(40)
    first = projections(x, methods=("tsne",), cache=tmp_path).coords["tsne"]
    (entry,) = tmp_path.glob("map-*.npy")
    assert entry.with_name(entry.name + ".sha256").is_file()

    def boom(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("computed again although cached")

    with monkeypatch.context() as m:
        m.setattr(projection, "_layout", boom)
        np.testing.assert_array_equal(
            projections(x, methods=("tsne",), cache=tmp_path).coords["tsne"], first
        )
    entry.write_bytes(entry.read_bytes()[:-8] + b"\0" * 8)  # damaged on disk
    again = projections(x, methods=("tsne",), cache=tmp_path).coords["tsne"]
    np.testing.assert_array_equal(again, first)
    other_seed = projections(x, methods=("tsne",), seed=1, cache=tmp_path)
    assert other_seed.coords["tsne"].shape == (40, 2)
    assert len(list(tmp_path.glob("map-*.npy"))) == 2
