"""Model comparison: McNemar's exact test and the paired bootstrap give the known answers on
synthetic predictions, two real heads compare on the same images, mismatched
classes are one line."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from scipy.stats import binomtest

import headstart
from headstart.cli.main import main
from headstart.config import load_config
from headstart.errors import ConfigError
from headstart.stats.paired import compare_predictions
from headstart.studies.compare import compare_models
from salt import copy_demo

CLASSES = ("hat", "pants", "shoes")


def _synthetic(n_a_only: int, n_b_only: int, n_both: int = 100, n_none: int = 20):
    """Labels and two prediction lists with the given discordant counts."""
    truth, a, b = [], [], []
    for count, a_right, b_right in (
        (n_both, True, True),
        (n_none, False, False),
        (n_a_only, True, False),
        (n_b_only, False, True),
    ):
        for i in range(count):
            label = "xyz"[i % 3]
            wrong = "xyz"[(i + 1) % 3]
            truth.append(label)
            a.append(label if a_right else wrong)
            b.append(label if b_right else wrong)
    return truth, a, b


def test_mcnemar_is_the_exact_binomial_on_discordant_pairs() -> None:
    c = compare_predictions(*_synthetic(3, 12), ["x", "y", "z"], n_boot=500)
    assert (c.only_a_right, c.only_b_right) == (3, 12)
    assert c.p_value == pytest.approx(binomtest(12, 15, 0.5).pvalue)
    assert c.metric == "accuracy" and c.diff.value == pytest.approx(9 / 135)
    assert c.verdict.startswith("B is better") and "p=0.0352" in c.verdict


def test_paired_bootstrap_never_shows_b_worse_when_it_never_is() -> None:
    c = compare_predictions(*_synthetic(0, 6), ["x", "y", "z"], n_boot=2000)
    # Every resample holds the same images for both, so B - A can never go below 0.
    assert c.diff.low >= 0 and c.diff.high > 0
    assert c.p_value == pytest.approx(2 * 0.5**6)


def test_equal_and_symmetric_predictions_are_no_difference() -> None:
    truth, a, _ = _synthetic(5, 5)
    same = compare_predictions(truth, a, a, ["x", "y", "z"], n_boot=200)
    assert same.p_value == 1.0 and same.diff.low == same.diff.high == 0
    sym = compare_predictions(*_synthetic(10, 10), ["x", "y", "z"], n_boot=200)
    assert sym.p_value == pytest.approx(1.0) and sym.verdict.startswith("no significant")
    a_better = compare_predictions(*_synthetic(15, 1), ["x", "y", "z"], n_boot=200)
    assert a_better.verdict.startswith("A is better")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path, Path]]:
    """Logistic and kNN fitted on three demo classes, one on two classes, and the data."""
    root = tmp_path_factory.mktemp("compare")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        copy_demo(root / "data", CLASSES)
        shutil.copytree(root / "data" / "train" / "hat", root / "two" / "hat")
        shutil.copytree(root / "data" / "train" / "shoes", root / "two" / "shoes")
        quiet = {"progress": False, "report": False}
        cfg = load_config(overrides=["eval.n_boot=0"])
        headstart.fit(root / "data", root / "a", config=cfg, **quiet)
        knn = load_config(overrides=["eval.n_boot=0", "head.kind=knn"])
        headstart.fit(root / "data", root / "b", config=knn, **quiet)
        headstart.fit(root / "two", root / "c", config=cfg, **quiet)
        yield root / "a" / "model", root / "b" / "model", root / "c" / "model", root / "data"


def test_two_real_heads_on_the_same_test_images(
    runs: tuple[Path, Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, _, data = runs
    c = compare_models(a, b, data, n_boot=500)
    assert c.n == 18 and sorted(c.classes) == sorted(CLASSES)
    assert c.score_b - c.score_a == pytest.approx((c.only_b_right - c.only_a_right) / 18)
    assert [d.name for d in c.per_class] == c.classes
    assert all(d.diff == pytest.approx(d.f1_b - d.f1_a) for d in c.per_class)
    assert main(["compare", str(a), str(b), str(data), "-q", "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "McNemar p=" in out and "F1 per class" in out


def test_different_class_sets_are_one_line_error(
    runs: tuple[Path, Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    a, _, c, data = runs
    with pytest.raises(ConfigError, match="different classes"):
        compare_models(a, c, data)
    assert main(["compare", str(a), str(c), str(data), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pants" in err
