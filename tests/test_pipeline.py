"""End to end through the library: fit on the bundled demo photos, cache reuse, load, predict,
evaluate, and the run folder's contents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.demo import demo_data_dir
from headstart.errors import ConfigError, DataError
from salt import copy_demo, make_bad_files

pytestmark = pytest.mark.usefixtures("cache_dir")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four demo classes, with their train/validation/test folders (real photos)."""
    return copy_demo(
        tmp_path_factory.mktemp("data") / "clothes", ("hat", "pants", "shoes", "t-shirt")
    )


@pytest.fixture(scope="module")
def fitted(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> headstart.FitResult:
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("HEADSTART_CACHE", str(cache))
    try:
        out = tmp_path_factory.mktemp("runs") / "clothes"
        result = headstart.fit(small_data, out, progress=False)
        again = headstart.fit(small_data, out, overwrite=True, progress=False)
        result.timings["second_computed"] = again.extraction.n_computed
    finally:
        mp.undo()
    return result


def test_fit_writes_a_complete_run(fitted: headstart.FitResult) -> None:
    run = fitted.run_dir
    for name in ("manifest.csv", "problems.csv", "config.yaml", "metrics.json", "run.json"):
        assert (run / name).is_file(), name
    info = json.loads((run / "model" / "model.json").read_text())
    assert info["classes"] == ["hat", "pants", "shoes", "t-shirt"]
    assert info["backbone"]["name"] == "mobilenet_v2"
    assert set(info["metrics"]) == {"val", "test"}
    assert info["versions"]["torch"]
    assert info["data_hash"] == fitted.manifest.data_hash()


def test_real_photos_are_classified_well(fitted: headstart.FitResult) -> None:
    acc = fitted.metrics["test"].accuracy
    assert acc.value >= 0.8, acc  # 4 easy clothing classes, pretrained features
    assert acc.low <= acc.value <= acc.high


def test_second_fit_uses_only_the_cache(fitted: headstart.FitResult) -> None:
    assert fitted.extraction.n_computed == len(fitted.manifest.samples)
    assert fitted.timings["second_computed"] == 0


def test_load_predict_matches_fit_metrics(fitted: headstart.FitResult, small_data: Path) -> None:
    model = headstart.load(fitted.bundle_dir)
    preds = model.predict([small_data / "test"], top_k=2)
    assert len(preds) == len(fitted.manifest.split("test"))
    assert all(p.error is None and len(p.top) == 2 for p in preds)
    truth = [p.path.parent.name for p in preds]
    acc = np.mean([p.top[0][0] == t for p, t in zip(preds, truth, strict=True)])
    assert acc == pytest.approx(fitted.metrics["test"].accuracy.value)


def test_evaluate_data_uses_the_test_split(fitted: headstart.FitResult, small_data: Path) -> None:
    result = headstart.evaluate_data(fitted.bundle_dir, small_data, progress=False)
    assert result.split == "test"
    assert result.metrics.accuracy.value == pytest.approx(fitted.metrics["test"].accuracy.value)


def test_bad_images_get_error_rows(fitted: headstart.FitResult, tmp_path: Path) -> None:
    expected = make_bad_files(tmp_path)
    good = tmp_path / "good.jpg"
    shutil.copy(next((demo_data_dir() / "test" / "hat").glob("*.jpg")), good)
    preds = {p.path.name: p for p in headstart.load(fitted.bundle_dir).predict([tmp_path])}
    assert preds["good.jpg"].error is None
    for name in expected:
        if name in preds:
            assert preds[name].error, name


def test_salted_folder_fits_and_reports_every_bad_file(small_data: Path, tmp_path: Path) -> None:
    data = tmp_path / "salted"
    shutil.copytree(small_data, data)
    expected = make_bad_files(data / "train" / "hat")
    shutil.copy(next((data / "train" / "pants").glob("*.jpg")), data / "test" / "pants" / "dup.jpg")
    result = headstart.fit(data, tmp_path / "run", progress=False)
    reported = {p.path.name: p.reason for p in result.manifest.problems}
    for name, reason in expected.items():
        assert name in reported, name
        assert reason in reported[name], (name, reported[name])
    assert any(g.cross_split for g in result.manifest.duplicates)
    problems = (tmp_path / "run" / "problems.csv").read_text()
    assert all(name in problems for name in expected)
    assert "duplicate across splits" in problems


def test_existing_run_is_not_overwritten_silently(
    fitted: headstart.FitResult, small_data: Path
) -> None:
    before = (fitted.bundle_dir / "model.json").read_bytes()
    with pytest.raises(ConfigError, match="--overwrite"):
        headstart.fit(small_data, fitted.run_dir, progress=False)
    assert (fitted.bundle_dir / "model.json").read_bytes() == before


def test_a_class_with_only_bad_images_is_a_user_error(tmp_path: Path) -> None:
    data = tmp_path / "d"
    shutil.copytree(demo_data_dir() / "train" / "hat", data / "hat")
    (data / "broken").mkdir()
    (data / "broken" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="broken"):
        headstart.fit(data, tmp_path / "run", progress=False)
