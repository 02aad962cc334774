"""Slow end-to-end checks on the real data sets in ../shared/data (skipped where absent); they
share one embedding cache, so each image is embedded once per session.  clothing_small and
sign_language_digits are thinned (every 3rd training image, every 2nd image) to keep the suite
within its time: the behaviour tested does not depend on their size, which benchmarks/ cover."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import headstart
from conftest import fit_run
from headstart.data.compose import compose_pairs
from headstart.result import FitResult
from headstart.stats import Metrics, MultiLabelMetrics

pytestmark = pytest.mark.slow


def _thinned(source: Path, dest: Path, keep: dict[str, int]) -> Path:
    """A copy of the image folder ``source`` keeping every n-th file (sorted) of each class
    folder under the top-level folders ``keep`` names (n), all of the others."""
    for folder in sorted(p for p in source.rglob("*") if p.is_dir()):
        files = sorted(f for f in folder.iterdir() if f.is_file())
        top = folder.relative_to(source).parts[0]
        for f in files[:: keep.get(top, keep.get("*", 1))]:
            target = dest / f.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, target)
    return dest


def _accuracy(result: FitResult, split: str) -> float:
    m = result.metrics[split]["label"]
    assert isinstance(m, Metrics)
    return m.accuracy.value


def test_hymenoptera_default_fit_reaches_93_percent(
    shared_data: Path, real_cache: Path, tmp_path: Path
) -> None:
    result = fit_run(shared_data / "hymenoptera", tmp_path / "run", real_cache)
    assert isinstance(result, FitResult)
    assert [p.path.name for p in result.manifest.problems] == ["imageNotFound.gif"]
    assert result.metrics["val"]["label"].n == 153
    assert _accuracy(result, "val") >= 0.93


def test_clothing_second_fit_reads_only_the_cache(
    shared_data: Path, real_cache: Path, tmp_path: Path
) -> None:
    data = _thinned(shared_data / "clothing_small", tmp_path / "clothing", {"train": 3})
    first = fit_run(data, tmp_path / "a", real_cache, report=False)
    second = fit_run(data, tmp_path / "b", real_cache, report=False)
    assert isinstance(first, FitResult) and isinstance(second, FitResult)
    assert second.extraction is not None and second.extraction.n_computed == 0
    assert _accuracy(first, "test") >= 0.8


def test_sign_language_unsplit_folder_gets_a_stratified_split(
    shared_data: Path, real_cache: Path, tmp_path: Path
) -> None:
    data = _thinned(shared_data / "sign_language_digits", tmp_path / "signs", {"*": 2})
    result = fit_run(data, tmp_path / "run", real_cache)
    assert isinstance(result, FitResult)
    assert "test" in result.metrics
    assert result.manifest.split_source.startswith("random")
    assert _accuracy(result, "test") >= 0.6


def test_multi_label_and_two_task_on_real_clothing_photos(
    shared_data: Path, real_cache: Path, tmp_path: Path
) -> None:
    """Composites of clothing_small: multi-label beats chance by far, two tasks train together,
    and the saved model predicts and evaluates."""
    labels = compose_pairs(shared_data / "clothing_small", tmp_path / "pairs", per_image=0.15)
    items = fit_run(labels, tmp_path / "ml", real_cache, "data.label_column=items", report=False)
    assert isinstance(items, FitResult)
    two = fit_run(labels, tmp_path / "two", real_cache, "data.label_column=[left,items]")
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())["test"]["tasks"]
    assert metrics["items"]["mean_ap"]["low"] > 0.5  # 2 of 10 labels per image: chance ~0.2
    assert metrics["left"]["accuracy"]["low"] > 0.3  # chance 0.1
    model = two.model  # type: ignore[attr-defined]
    result = headstart.evaluate_data(model, labels, n_boot=100, progress=False)
    assert isinstance(result.metrics["items"], MultiLabelMetrics)
    assert result.metrics["left"].n == metrics["left"]["n"]
    photo = sorted((labels.parent / "test").glob("*.jpg"))[0]
    (prediction,) = model.predict([photo])
    assert set(prediction.tasks) == {"left", "items"}
