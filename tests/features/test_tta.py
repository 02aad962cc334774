"""Test-time augmentation: the views are what they claim, ``tta=none`` is today's path, the mean
of probabilities (calibrated per view), failures still reported, and the ``--tta`` CLI option."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

import headstart
from headstart.backbones import BackboneRef, get_spec, resolve_backbone
from headstart.cli.main import main
from headstart.errors import ConfigError
from headstart.features import EmbeddingStore, extract, model_key
from headstart.features.tta import TTA_MODES, View, tta_views, view_arrays, view_embeddings
from headstart.model import Model
from headstart.result import FitResult
from headstart.stats.temperature import apply_temperature
from salt import make_bad_files


def _asymmetric(path: Path, size: tuple[int, int] = (256, 320)) -> Path:
    """A picture whose left and right halves differ (a mirror changes it)."""
    image = Image.new("RGB", size, (30, 60, 90))
    draw = ImageDraw.Draw(image)
    draw.rectangle((10, 20, 90, 300), fill=(240, 200, 20))
    draw.ellipse((150, 40, 240, 130), fill=(200, 20, 60))
    draw.line((0, 0, size[0], size[1]), fill=(255, 255, 255), width=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def test_modes_name_their_views_and_bad_modes_are_user_errors() -> None:
    assert [len(tta_views(m)) for m in TTA_MODES] == [1, 2, 5, 10]
    assert all(tta_views(m)[0] == View("centre") for m in TTA_MODES)
    names = [v.name for v in tta_views("flip+crops")]
    assert len(set(names)) == 10 and "top_left_flip" in names
    with pytest.raises(ConfigError, match=r"unknown tta 'mirror'; known: .*flip\+crops"):
        tta_views("mirror")


@pytest.mark.parametrize("backbone", ["mobilenet_v2", "efficientnet_lite0"])
def test_views_follow_the_backbone_preprocessing_and_torchvision_five_crop(
    backbone: str, tmp_path: Path
) -> None:
    from torchvision.transforms.v2 import functional as tvf

    prep = get_spec(backbone).preprocessing
    image = Image.open(_asymmetric(tmp_path / "a.png", (300, 410))).convert("RGB")
    arrays = view_arrays(image, prep, tta_views("flip+crops"))
    assert arrays.shape == (10, 3, prep.crop, prep.crop) and arrays.dtype == np.float32
    assert np.array_equal(arrays[0], prep(image))  # centre == the plain path, bit for bit
    resized = image.resize(
        prep.resized_size(*image.size), Image.Resampling[prep.interpolation.upper()]
    )
    tl, tr, bl, br, centre = tvf.five_crop(resized, [prep.crop, prep.crop])
    normalise = replace(prep, resize=prep.crop)
    for k, patch in enumerate((centre, tl, tr, bl, br)):
        assert np.array_equal(arrays[k], normalise(patch))
        assert np.array_equal(arrays[5 + k], normalise(ImageOps.mirror(patch)))
    flat = arrays.reshape(10, -1)
    assert all(not np.array_equal(flat[i], flat[j]) for i in range(10) for j in range(i))


def test_flip_view_is_the_mirrored_file(tmp_path: Path) -> None:
    prep = get_spec("mobilenet_v2").preprocessing
    image = Image.open(_asymmetric(tmp_path / "a.png")).convert("RGB")
    mirrored = view_arrays(image, prep, [View("centre", flip=True)])[0]
    assert np.array_equal(mirrored, prep(ImageOps.mirror(image)))
    assert not np.array_equal(mirrored, prep(image))


@pytest.fixture(scope="module")
def ref() -> BackboneRef:
    return resolve_backbone("mobilenet_v2")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingStore:
    return EmbeddingStore(tmp_path_factory.mktemp("tta-store"))


def test_view_embeddings_mirror_crop_and_cache_apart(
    tmp_path: Path, ref: BackboneRef, store: EmbeddingStore
) -> None:
    a = _asymmetric(tmp_path / "a.png")
    b = tmp_path / "b.png"
    ImageOps.mirror(Image.open(a)).save(b)
    flip, failures = view_embeddings([a, b], ref, "flip", store=store, engine="onnx")
    assert flip.shape == (2, 2, 1280) and not failures
    np.testing.assert_allclose(flip[1, 0], flip[0, 1], atol=1e-5)  # flip(a) == plain(b)
    np.testing.assert_allclose(flip[1, 1], flip[0, 0], atol=1e-5)
    assert np.abs(flip[0, 0] - flip[0, 1]).max() > 0.1

    crops, _ = view_embeddings([a], ref, "crops", store=store, engine="onnx")
    plain = extract([a], None, ref, store=store, engine="onnx", progress=False)
    assert np.array_equal(crops[0], plain.features) and plain.n_cached == 1
    assert all(np.abs(crops[i, 0] - crops[j, 0]).max() > 1e-3 for i in range(5) for j in range(i))
    again, _ = view_embeddings([a], ref, "crops", store=store, engine="onnx")
    assert np.array_equal(again, crops)
    # extra views live under their own keys: the plain table holds only a and b
    assert len(store.table(model_key(ref, "onnx"))) == 2


@pytest.fixture(scope="module")
def run(plain_run: FitResult, tiny_data: Path, shared_cache: Path) -> Iterator[tuple[Path, Path]]:
    """The session's probe model; its cache is the default root for the module's tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(shared_cache))
        yield plain_run.bundle_dir, tiny_data


def _test_paths(data: Path) -> list[Path]:
    return (
        sorted((data / "test" / "hat").glob("*.jpg"))[:2]
        + sorted((data / "test" / "shoes").glob("*.jpg"))[:2]
    )


def test_none_is_todays_path_and_flip_is_the_mean_of_views(run: tuple[Path, Path]) -> None:
    bundle, data = run
    model = headstart.load(bundle)
    paths = _test_paths(data)
    today, _ = model.predict_proba(paths)
    features, _ = model.embed(paths)
    assert np.array_equal(model.predict_proba(paths, tta="none")[0], today)
    assert np.array_equal(today, model.proba_from_features(features)["label"])

    model.set_calibration({"method": "temperature", "temperature": 2.0})
    proba, failures = model.predict_proba(paths, tta="flip")
    assert not failures
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    views, _ = view_embeddings(paths, model.backbone_ref, "flip", store=model.cache.store)
    per_view = [apply_temperature(model.uncalibrated_proba(v)["label"], 2.0) for v in views]
    np.testing.assert_allclose(proba, np.mean(per_view, axis=0), atol=1e-12)
    assert not np.allclose(proba, per_view[0])


def test_unreadable_files_are_still_reported(run: tuple[Path, Path], tmp_path: Path) -> None:
    bundle, data = run
    model: Model = headstart.load(bundle)
    reasons = make_bad_files(tmp_path / "bad")
    bad = sorted((tmp_path / "bad").iterdir())
    paths = [_test_paths(data)[0], *bad, tmp_path / "vanished.jpg"]
    _, plain_failures = model.predict_proba(paths)
    proba, failures = model.predict_proba(paths, tta="flip+crops")
    assert failures == plain_failures and sorted(failures) == list(range(1, len(paths)))
    for i, path in enumerate(bad, start=1):
        assert reasons[path.name] in failures[i]
    assert np.isnan(proba[1:]).all() and proba[0].sum() == pytest.approx(1.0)
    predictions = model.predict(paths[:-1], tta="flip")  # predict rejects missing paths early
    assert predictions[0].top and all(p.error for p in predictions[1:])


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("headstart: error:"), err
    assert needle in err and "flip+crops" in err, err


def test_cli_tta_options(
    run: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle, data = run
    photo = _test_paths(data)[0]
    assert main(["predict", str(bundle), str(photo), "--tta", "flip", "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["top"][0]["label"] == "hat"
    out = tmp_path / "m.json"
    assert (
        main(["evaluate", str(bundle), str(data), "--tta", "flip+crops", "-q", "-o", str(out)]) == 0
    )
    assert json.loads(out.read_text())["tasks"]["label"]["n"] == 24
    _one_line_error(capsys, ["predict", str(bundle), str(photo), "--tta", "mirror"], "mirror")
    _one_line_error(capsys, ["evaluate", str(bundle), str(data), "--tta", "ten"], "ten")
    runtime = ["--runtime", "onnx", "--tta", "nope"]
    _one_line_error(capsys, ["predict", str(bundle), str(photo), *runtime], "nope")


def test_onnx_runtime_averages_the_same_views(
    run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from headstart.export import load_onnx

    bundle, data = run
    paths = _test_paths(data)
    onnx_model = load_onnx(bundle)  # exports model.onnx (with its parity check) once
    expected, _ = headstart.load(bundle).predict_proba(paths, tta="flip+crops")
    proba, failures = onnx_model.predict_proba(paths, tta="flip+crops")
    assert not failures
    np.testing.assert_allclose(proba, expected, atol=1e-4)
    argv = ["predict", str(bundle), str(paths[-1]), "--runtime", "onnx", "--tta", "flip"]
    assert main([*argv, "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["label"] == "shoes"


def test_every_task_averages_its_views(two_task_run: FitResult, composites: Path) -> None:
    """Multi-class tasks average softmax rows, multi-label tasks each label's probability."""
    model = two_task_run.model
    paths = sorted((composites.parent / "test").glob("*.jpg"))[:3]
    probas, failures = model.task_proba(paths, tta="flip")
    assert not failures and set(probas) == {"left", "items"}
    views, _ = view_embeddings(paths, model.backbone_ref, "flip", store=model.cache.store)
    for name, proba in probas.items():
        per_view = [model.proba_from_features(v)[name] for v in views]
        np.testing.assert_allclose(proba, np.mean(per_view, axis=0), atol=1e-12)
    (prediction,) = model.predict(paths[:1], tta="flip")
    assert set(prediction.tasks) == {"left", "items"}
