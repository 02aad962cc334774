"""Features of a fused backbone: each part through its own cache entries, columns side by side
(files, TTA views and decoded images alike), failures of any part failing the fusion."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from headstart.backbones import BackboneRef, resolve_backbone
from headstart.data.images import load_rgb
from headstart.errors import BackboneError
from headstart.features import EmbeddingStore, ImageFeatures, extract, feature_runner, model_key
from headstart.features.extract import resolve_engine
from headstart.features.tta import view_embeddings

FUSED = "mobilenet_v2+efficientnet_lite0"


@pytest.fixture(scope="module")
def store(shared_cache: Path) -> EmbeddingStore:
    """The session's cache: the parts' embeddings of the tiny data may already be there."""
    return EmbeddingStore(shared_cache)


@pytest.fixture(scope="module")
def photos(tiny_data: Path) -> list[Path]:
    return [sorted((tiny_data / "test" / cls).glob("*.jpg"))[0] for cls in ("hat", "shoes")]


@pytest.fixture(scope="module")
def fused() -> BackboneRef:
    return resolve_backbone(FUSED)


def _parts(paths: list[Path], ref: BackboneRef, store: EmbeddingStore) -> list[np.ndarray]:
    return [extract(paths, None, p, store=store, progress=False).features for p in ref.parts]


def test_fused_features_are_the_parts_side_by_side_from_their_caches(
    photos: list[Path], fused: BackboneRef, store: EmbeddingStore
) -> None:
    parts = _parts(photos, fused, store)
    result = extract(photos, None, fused, store=store, progress=False)
    # every part was cached by the single-backbone runs: the fusion embeds nothing
    assert result.n_computed == 0 and result.n_cached == len(photos)
    assert [(e.n_computed, e.n_cached) for e in result.parts] == [(0, len(photos))] * 2
    assert result.features.shape == (len(photos), 2560) and not result.failures
    np.testing.assert_array_equal(result.features, np.concatenate(parts, axis=1))


def test_a_file_any_part_cannot_read_fails_the_fusion(
    photos: list[Path], fused: BackboneRef, store: EmbeddingStore, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    # a photo of its own bytes (a trailing comment), which only the second part has failed on
    odd = tmp_path / "odd.jpg"
    odd.write_bytes(photos[0].read_bytes() + b"fusion test")
    first, second = fused.parts
    result = extract([odd], None, first, store=store, progress=False)
    sha = hashlib.sha256(odd.read_bytes()).hexdigest()
    store.put_failure(model_key(second, resolve_engine("auto")), sha, "broken in part two")
    paths = [photos[0], garbage, odd, photos[1]]
    fusion = extract(paths, None, fused, store=store, progress=False)
    assert sorted(fusion.failures) == [1, 2] and fusion.failures[2] == "broken in part two"
    assert np.isnan(fusion.features[[1, 2]]).all()
    assert not np.isnan(fusion.features[[0, 3]]).any()
    assert not np.isnan(result.features).any()  # the first part reads it


def test_tta_views_of_a_fusion_are_its_parts_views(
    photos: list[Path], fused: BackboneRef, store: EmbeddingStore
) -> None:
    parts = [view_embeddings(photos, p, "flip", store=store)[0] for p in fused.parts]
    views, failures = view_embeddings(photos, fused, "flip", store=store)
    assert views.shape == (2, len(photos), 2560) and not failures
    np.testing.assert_array_equal(views, np.concatenate(parts, axis=2))


def test_decoded_images_give_the_features_of_their_files(
    photos: list[Path], fused: BackboneRef, store: EmbeddingStore
) -> None:
    # both parts resize to 256 px: one decode at that draft size serves both
    assert {p.preprocessing.resize for p in fused.parts} == {256}
    images = [load_rgb(p, draft_size=256) for p in photos]
    warm = ImageFeatures(fused, store)
    expected = extract(photos, None, fused, store=store, progress=False).features
    np.testing.assert_allclose(warm(images), expected, atol=1e-4)
    single = ImageFeatures(fused.parts[0], store)  # a single backbone: its own columns
    np.testing.assert_allclose(single(images), expected[:, :1280], atol=1e-4)
    with pytest.raises(BackboneError, match="a feature runner needs one backbone"):
        feature_runner(fused, store)
