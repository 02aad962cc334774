"""The OOD scorer: cosine distance to the k-th nearest training embedding, its threshold (held-out
or leave-one-out), the capped seeded float16 bank, its stored form, the torch module that the
export uses; and on real photos: in-distribution test images mostly pass, foreign ones score
higher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_CLASSES
from headstart.demo import demo_data_dir
from headstart.errors import BundleError, DataError
from headstart.heads import OodScorer, fit_ood
from headstart.result import FitResult
from headstart.stats import auroc


def _cluster(rng: np.random.Generator, n: int, d: int = 16, centre: float = 3.0) -> np.ndarray:
    return rng.normal(0.0, 1.0, (n, d)) + centre


def test_scores_are_cosine_distances_to_the_kth_nearest_training_embedding() -> None:
    train = np.eye(4)[:3] * [[5.0], [2.0], [0.5]]  # norms do not matter, directions do
    nearest = fit_ood(train, k=1)
    scores = nearest.score(np.array([[2.0, 0, 0, 0], [0, 0, 0, 3.0], [1.0, 1.0, 0, 0]]))
    np.testing.assert_allclose(scores, [0.0, 1.0, 1 - np.sqrt(0.5)], atol=1e-3)
    second = fit_ood(train, k=2)
    assert second.k == 2
    np.testing.assert_allclose(second.score(np.array([[2.0, 0, 0, 0]])), [1.0], atol=1e-3)
    assert fit_ood(train, k=50).k == 2  # at most the other rows, leaving each one out


def test_the_threshold_lets_95_percent_of_in_distribution_images_pass() -> None:
    rng = np.random.default_rng(0)
    train, held, fresh = _cluster(rng, 600), _cluster(rng, 300), _cluster(rng, 2000)
    on_held = fit_ood(train, held_out=held)
    assert np.mean(on_held.score(held) <= on_held.threshold) >= 0.95
    assert "300 held-out" in on_held.fitted_on
    left_out = fit_ood(train)  # each training row scored without itself
    passed = np.mean(~left_out.flags(left_out.score(fresh)))
    assert 0.92 <= passed <= 0.98, passed
    far = left_out.score(-_cluster(rng, 50))
    assert left_out.flags(far).all()


def test_the_bank_is_a_capped_seeded_float16_subsample() -> None:
    rng = np.random.default_rng(1)
    train = _cluster(rng, 300)
    scorer = fit_ood(train, max_bank=100, seed=3)
    assert scorer.bank.shape == (100, 16) and scorer.bank.dtype == np.float16
    assert scorer.n_train == 300 and scorer.meta()["bank_rows"] == 100
    np.testing.assert_allclose(np.linalg.norm(scorer.bank32(), axis=1), 1.0, atol=2e-3)
    again = fit_ood(train, max_bank=100, seed=3)
    np.testing.assert_array_equal(again.bank, scorer.bank)
    assert not np.array_equal(fit_ood(train, max_bank=100, seed=4).bank, scorer.bank)


def test_the_stored_form_round_trips_and_a_bad_one_is_a_bundle_error() -> None:
    scorer = fit_ood(_cluster(np.random.default_rng(2), 40), k=3)
    back = OodScorer.from_stored(scorer.arrays(), scorer.meta())
    assert back == OodScorer(scorer.bank, 3, scorer.threshold, 0.95, scorer.fitted_on, 40)
    x = _cluster(np.random.default_rng(3), 5)
    np.testing.assert_array_equal(back.score(x), scorer.score(x))
    with pytest.raises(BundleError, match="unknown OOD method 'mahalanobis'"):
        OodScorer.from_stored(scorer.arrays(), {**scorer.meta(), "method": "mahalanobis"})
    with pytest.raises(BundleError, match="bad OOD bank"):
        OodScorer.from_stored({"bank": scorer.bank.astype(np.float32)}, scorer.meta())
    with pytest.raises(DataError, match=r"expects \(N, 16\)"):
        scorer.score(np.zeros((2, 8)))
    with pytest.raises(DataError, match="at least 2"):
        fit_ood(np.zeros((1, 16)))


def test_the_torch_module_scores_as_the_numpy_scorer() -> None:
    import torch

    from headstart.heads.torch_head import ood_module

    rng = np.random.default_rng(4)
    scorer = fit_ood(_cluster(rng, 200, d=64), k=5)
    x = np.r_[_cluster(rng, 20, d=64), -_cluster(rng, 5, d=64)].astype(np.float32)
    with torch.no_grad():
        got = ood_module(scorer)(torch.from_numpy(x)).numpy()
    assert got.shape == (25, 1)
    np.testing.assert_allclose(got[:, 0], scorer.score(x), atol=1e-5)


def _foreign(folder: Path) -> list[Path]:
    """Images that are no clothing photo at all: flat colours and noise."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i, colour in enumerate([(0, 0, 0), (255, 255, 255), (30, 140, 40), (200, 30, 30)]):
        paths.append(folder / f"flat{i}.png")
        Image.new("RGB", (160, 120), colour).save(paths[-1])
    for i in range(4):
        paths.append(folder / f"noise{i}.png")
        pixels = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_on_real_photos_test_images_pass_and_foreign_images_score_higher(
    plain_run: FitResult, tmp_path: Path
) -> None:
    model = plain_run.model
    assert model.ood is not None and model.ood.bank.shape[1] == 1280
    tests = sorted((plain_run.manifest.root / "test").rglob("*.jpg"))
    inside, failures = model.ood_scores(tests)
    assert not failures
    assert np.mean(inside <= model.ood.threshold) >= 0.8  # 95% expected; 32 images
    synthetic, _ = model.ood_scores(_foreign(tmp_path / "foreign"))
    assert (synthetic > model.ood.threshold).all(), (synthetic, model.ood.threshold)
    demo = demo_data_dir() / "test"
    unseen = sorted(p for p in demo.glob("*/*.jpg") if p.parent.name not in TINY_CLASSES)
    near, _ = model.ood_scores(unseen)
    assert auroc(inside, synthetic) == 1.0
    assert auroc(inside, near) > 0.6  # other clothes: nearer, still further than the trained ones
