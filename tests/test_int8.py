"""Static int8 backbones (``extract.precision=int8``): feature drift against float32, a probe's
top-1 agreement, the int8 bundle (cache key, reload, damaged file), prediction through every
runner path (files, TTA, decoded images), making an int8 bundle from an existing one, the
``fit --set extract.precision=int8`` CLI, and the export with its int8 backbone, on the
bundled demo photos."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import fit_run
from headstart.bundle import read_bundle
from headstart.cache import CacheRoot
from headstart.cli.main import main
from headstart.compress.int8 import int8_bundle
from headstart.errors import BackboneError, BundleError, ConfigError
from headstart.export import export_model
from headstart.features import extract, model_key
from headstart.features.int8 import calibration_sample, float_ref, quantize_ref
from headstart.model import load

#: Bounds with margin over what these photos measured (mobilenet_v2, calibrated on the 80
#: training images, the 24 test images): cosine to float32 mean 0.991, min 0.983; top-1
#: agreement with the float32 model 100% (one changed answer of 24 would be 95.8%).
COSINE_MEAN = 0.98
COSINE_MIN = 0.95
AGREEMENT = 0.9


@pytest.fixture(scope="module")
def int8_run(tiny_data: Path, shared_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A probe fitted on int8 embeddings of the tiny data."""
    out = tmp_path_factory.mktemp("int8") / "run"
    return fit_run(tiny_data, out, shared_cache, "extract.precision=int8", report=False)


@pytest.fixture(scope="module")
def test_images(tiny_data: Path) -> list[Path]:
    return sorted((tiny_data / "test").rglob("*.jpg"))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out: np.ndarray = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    return out


def test_int8_features_stay_close_to_float32(
    int8_run: Any, plain_run: Any, test_images: list[Path], shared_cache: Path
) -> None:
    int8, fp32 = load(int8_run.bundle_dir), load(plain_run.bundle_dir)
    assert int8.backbone_ref.precision == "int8" and fp32.backbone_ref.precision == "fp32"
    store = CacheRoot.of(shared_cache).store
    a = extract(test_images, None, int8.backbone_ref, store=store, progress=False).features
    b = extract(test_images, None, fp32.backbone_ref, store=store, progress=False).features
    cos = _cosine(a, b)
    assert cos.mean() >= COSINE_MEAN and cos.min() >= COSINE_MIN, (cos.mean(), cos.min())
    # the float32 probe on int8 features answers as on float32 ones
    agree = np.mean(
        fp32.proba_from_features(a)["label"].argmax(1)
        == fp32.proba_from_features(b)["label"].argmax(1)
    )
    assert agree >= AGREEMENT
    # and the probe fitted on int8 features agrees with the float32 model
    p8 = [p.top[0][0] for p in int8.predict(test_images)]
    p32 = [p.top[0][0] for p in fp32.predict(test_images)]
    assert np.mean([x == y for x, y in zip(p8, p32, strict=True)]) >= AGREEMENT


def test_int8_entries_never_meet_float32_ones(int8_run: Any, plain_run: Any) -> None:
    int8 = load(int8_run.bundle_dir).backbone_ref
    fp32 = load(plain_run.bundle_dir).backbone_ref
    assert model_key(int8, "onnx") != model_key(fp32, "onnx")
    assert model_key(float_ref(int8), "onnx") == model_key(fp32, "onnx")


def test_int8_bundle_carries_and_verifies_its_model(int8_run: Any, tmp_path: Path) -> None:
    bundle = int8_run.bundle_dir
    info = json.loads((bundle / "model.json").read_text())
    sha = info["backbone"]["int8_sha256"]
    assert info["files"]["backbone.int8.onnx"] == sha
    assert info["format_version"] == 3  # an older reader runs the float32 weights it holds
    ref = read_bundle(bundle).backbone
    assert ref.int8_path == bundle / "backbone.int8.onnx" and ref.int8_sha256 == sha
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    with (damaged / "backbone.int8.onnx").open("r+b") as fh:
        fh.seek(5000)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleError) as err:
        load(damaged)
    assert "backbone.int8.onnx does not match its sha256" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_int8_model_predicts_through_every_path(
    int8_run: Any, test_images: list[Path], tmp_path: Path
) -> None:
    model = load(int8_run.bundle_dir, cache=CacheRoot.of(tmp_path / "fresh"))
    proba, failures = model.predict_proba(test_images)
    assert not failures and np.allclose(proba.sum(1), 1.0)
    # decoded images (serving) run the same int8 session as files do
    images = [Image.open(p).convert("RGB") for p in test_images[:4]]
    served = model.predict_images(images)["label"]
    assert np.allclose(served, proba[:4], atol=1e-5)
    flipped, _ = model.predict_proba(test_images[:4], tta="flip")
    assert flipped.shape == (4, len(model.classes))
    # saved again and reloaded: still int8, same predictions
    again = load(model.save(tmp_path / "copy"), cache=model.cache)
    assert again.backbone_ref.int8_sha256 == model.backbone_ref.int8_sha256
    assert np.allclose(again.predict_proba(test_images)[0], proba)
    with pytest.raises(ConfigError, match="ONNX Runtime only"):
        extract(test_images[:1], None, model.backbone_ref, store=model.cache.store, engine="torch")


def test_damaged_cached_int8_model_is_one_line(int8_run: Any, tmp_path: Path) -> None:
    ref = load(int8_run.bundle_dir).backbone_ref
    copy = tmp_path / "int8.onnx"
    copy.write_bytes(b"not a model")
    broken = type(ref)(**{**ref.__dict__, "int8_path": copy})
    with pytest.raises(BackboneError, match="does not match its sha256"):
        extract([Path(__file__)], ["0" * 64], broken, store=CacheRoot.of(tmp_path).store)


def test_int8_bundle_from_an_existing_model(
    plain_run: Any, tiny_data: Path, shared_cache: Path, tmp_path: Path, test_images: list[Path]
) -> None:
    cache = CacheRoot.of(shared_cache)
    out = int8_bundle(plain_run.bundle_dir, tiny_data, tmp_path / "int8", cache=cache)
    model, fp32 = load(out, cache=cache), load(plain_run.bundle_dir, cache=cache)
    assert model.backbone_ref.precision == "int8"
    assert model.info["metrics"] == fp32.info["metrics"]  # the heads are kept as they are
    a, b = model.predict_proba(test_images)[0], fp32.predict_proba(test_images)[0]
    assert np.mean(a.argmax(1) == b.argmax(1)) >= AGREEMENT
    # calibrated on the same training images with the same settings: the cached model
    again = quantize_ref(
        fp32.backbone_ref, sorted((tiny_data / "train").rglob("*.jpg")), cache.store
    )
    assert again.int8_path is not None and again.int8_path.parent == cache.store.root / "onnx"
    with pytest.raises(ConfigError, match="own backbone"):
        model.with_backbone(
            type(model.backbone_ref)(**{**model.backbone_ref.__dict__, "name": "x"})
        )


def test_calibration_sample_is_even_and_deterministic() -> None:
    items = list(range(1000))
    picked = calibration_sample(items, 300)
    assert len(picked) == 300 and picked[0] == 0 and picked[-1] == 999
    assert picked == calibration_sample(items, 300)
    assert calibration_sample(items[:5], 300) == items[:5]


def test_export_of_an_int8_bundle(int8_run: Any, tiny_data: Path, tmp_path: Path) -> None:
    checks = tiny_data / "test"
    result = export_model(int8_run.bundle_dir, output=tmp_path / "m.onnx", check_images=[checks])
    assert result.int8_backbone is not None and result.int8_backbone.max_abs_diff <= 1e-4
    doc = json.loads(result.metadata_path.read_text())
    assert doc["backbone_precision"] == "int8"
    import onnx

    ops = {n.op_type for n in onnx.load(str(result.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


@pytest.mark.slow
def test_fit_cli_int8_end_to_end(
    tiny_data: Path, shared_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["fit", str(tiny_data), "-o", str(out), "--no-report"]
    sets = ["--set", f"extract.cache_dir={shared_cache}", "--set", "extract.precision=int8"]
    assert main([*argv, *sets, "--set", "eval.n_boot=50"]) == 0, capsys.readouterr().err
    assert (out / "model" / "backbone.int8.onnx").is_file()
    capsys.readouterr()
    assert main(["predict", str(out / "model"), str(tiny_data / "test" / "hat"), "-f", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and all(r["error"] is None for r in rows)


def test_fine_tuning_with_int8_precision_is_refused_before_writing(
    capsys: pytest.CaptureFixture[str], tiny_data: Path, tmp_path: Path
) -> None:
    from headstart.cli.main import main

    out = tmp_path / "run"
    argv = ["fit", str(tiny_data), "-o", str(out), "--strategy", "finetune"]
    assert main([*argv, "--set", "extract.precision=int8"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "headstart compress" in err, err
    assert not out.exists()
