"""Transferability scores (against a port of the LogME reference code) and backbone ranking."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from headstart.cli.main import main
from headstart.config import load_config
from headstart.demo import demo_data_dir
from headstart.ranking import imagenet_head, rank_backbones
from headstart.stats import transferability as tr
from salt import copy_demo


def _reference_logme(f: np.ndarray, y: np.ndarray) -> float:
    """thuml/LogME ``_fit_fixed_point`` (N > D branch, full SVD), ported as published."""
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    s = s.reshape(-1, 1)
    sigma = s**2
    evidences = []
    for i in range(int(y.max()) + 1):
        y_ = (y == i).astype(np.float64).reshape(-1, 1)
        x = u.T @ y_
        x2 = x**2
        res_x2 = (y_**2).sum() - x2.sum()
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = (sigma / (sigma + t)).sum()
            m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
            res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
            alpha = gamma / (m2 + 1e-5)
            beta = (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        t = alpha / beta
        m2 = (sigma * x2 / ((t + sigma) ** 2)).sum()
        res2 = (x2 / ((1 + sigma / t) ** 2)).sum() + res_x2
        evidence = (
            d / 2.0 * np.log(alpha)
            + n / 2.0 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * sigma))
            - beta / 2.0 * res2
            - alpha / 2.0 * m2
            - n / 2.0 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def _clusters(
    n: int, d: int, c: int, signal: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    centres = rng.normal(size=(c, d))
    return signal * centres[y] + rng.normal(size=(n, d)), y


def test_logme_matches_reference_implementation_when_n_exceeds_d() -> None:
    x, y = _clusters(300, 20, 4, 0.5)
    assert tr.logme(x, y) == pytest.approx(_reference_logme(x, y), rel=1e-6)


@pytest.mark.parametrize("score", [tr.logme, tr.shrinkage_h_score, tr.knn_accuracy])
def test_feature_scores_prefer_informative_features(score: object) -> None:
    good, y = _clusters(120, 200, 3, 1.0)  # N < D as with small real data sets
    noise = np.random.default_rng(1).normal(size=good.shape)
    assert score(good, y) > score(noise, y)  # type: ignore[operator]


def test_knn_accuracy_is_perfect_on_separated_clusters_and_leaves_each_image_out() -> None:
    x, y = _clusters(60, 5, 3, 20.0)
    assert tr.knn_accuracy(x, y, k=3) == 1.0
    # one image per class: leave-one-out can never find its own class
    assert tr.knn_accuracy(np.eye(3), np.arange(3), k=1) == 0.0


@pytest.mark.parametrize("n", [40, 150])  # N < D and N > D
def test_shared_work_across_labelings_gives_the_same_scores(n: int) -> None:
    x, _ = _clusters(n, 60, 3, 1.0)
    labelings = [np.random.default_rng(j).integers(0, 2 + j, size=n) for j in range(3)]
    shared = tr.Shared()
    for y in labelings:
        assert tr.logme(x, y, shared) == tr.logme(x, y)
        assert tr.shrinkage_h_score(x, y, shared) == tr.shrinkage_h_score(x, y)
        assert tr.knn_accuracy(x, y, block=16, shared=shared) == tr.knn_accuracy(x, y, block=16)


def test_leep_and_nce_reward_source_classes_that_determine_the_target() -> None:
    y = np.arange(90) % 3
    informative = np.full((90, 10), 0.01)
    informative[np.arange(90), y * 3] = 0.91  # source class 3c means target class c
    uninformative = np.full((90, 10), 0.1)
    uninformative[np.arange(90), np.arange(90) % 10] = 0.91
    assert tr.nce(informative, y) == pytest.approx(0.0)
    assert tr.nce(informative, y) > tr.nce(uninformative, y)
    assert tr.leep(informative, y) > tr.leep(uninformative, y)
    assert tr.leep(informative, y) <= 0.0


@pytest.mark.slow
def test_imagenet_head_on_pooled_features_reproduces_the_model_logits() -> None:
    import torch

    from headstart.backbones import resolve_backbone
    from headstart.data import load_rgb

    image = load_rgb(next((demo_data_dir() / "train" / "hat").iterdir()))
    for name in ("mobilenet_v2", "efficientnet_lite0"):
        ref = resolve_backbone(name)
        head = imagenet_head(ref)
        assert head is not None
        backbone = ref.build()
        x = torch.from_numpy(ref.preprocessing(image))[None]
        with torch.inference_mode():
            feats, logits = backbone(x).double().numpy(), backbone.imagenet_logits(x).numpy()
        np.testing.assert_allclose(feats @ head[0].T + head[1], logits, atol=1e-3)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rank")
    copy_demo(root, ("hat", "shoes"), ("train", "validation"))
    return root


def test_rank_backbones_scores_probes_and_chooses(small_data: Path, cache_dir: Path) -> None:
    cfg = load_config(overrides=["extract.engine=torch"])
    ranking = rank_backbones(small_data, cfg, backbones=["mobilenet_v2"], top=1)
    (row,) = ranking.rows
    assert ranking.chosen == "mobilenet_v2"
    assert set(row.scores) == {"logme", "leep", "nce", "h_score", "knn"}
    assert all(np.isfinite(v) for v in row.scores.values())
    assert row.scores["knn"] > 0.8
    assert row.probe_on == "val" and row.probe_score is not None and ranking.metric == "accuracy"
    assert ranking.to_dict()["rows"][0]["backbone"] == "mobilenet_v2"


@pytest.mark.slow
def test_cli_rank_backbones_prints_table_and_choice(
    small_data: Path, cache_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "rank-backbones",
            str(small_data),
            "-b",
            "mobilenet_v2",
            "--set",
            "extract.engine=torch",
            "-q",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "Chosen backbone: mobilenet_v2" in out and "LogME" in out


def test_cli_rank_backbones_rejects_bad_top(
    small_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rank-backbones", str(small_data), "--top", "0"]) == 2
    assert "top must be at least 1" in capsys.readouterr().err
