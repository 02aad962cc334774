"""ONNX export of the whole model: parity with torch, metadata, int8, ``predict --runtime onnx``,
and user errors (bad format, damaged bundle, failed parity leaves no file)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import headstart
from headstart.cli.main import main
from headstart.config import load_config
from headstart.demo import demo_data_dir
from headstart.errors import BundleError, ConfigError
from headstart.export import ExportError, export_model, load_onnx, read_metadata
from headstart.export import onnx_model as onnx_model_module

CLASSES = ("hat", "pants", "shoes")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Two small models (logistic, kNN) on three demo classes, sharing one embedding cache."""
    root = tmp_path_factory.mktemp("export")
    data = root / "data"
    for cls in CLASSES:
        shutil.copytree(demo_data_dir() / "train" / cls, data / cls)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        out = {}
        for kind in ("logistic", "knn"):
            cfg = load_config(overrides=[f"head.kind={kind}"])
            out[kind] = headstart.fit(data, root / kind, config=cfg, progress=False).run_dir
            out[kind] = out[kind] / "model"
        yield out


@pytest.fixture(scope="module")
def check_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Labelled test photos (class folders), three per class, plus one of an unknown class."""
    root = tmp_path_factory.mktemp("check")
    for cls in CLASSES:
        (root / cls).mkdir()
        for photo in sorted((demo_data_dir() / "test" / cls).glob("*.jpg"))[:3]:
            shutil.copy(photo, root / cls / photo.name)
    (root / "other").mkdir()
    shutil.copy(next((demo_data_dir() / "test" / "dress").glob("*.jpg")), root / "other")
    return root


@pytest.fixture(scope="module")
def exported(runs: dict[str, Path], check_dir: Path) -> headstart.export.ExportResult:
    return export_model(runs["logistic"], check_images=check_dir)


def test_whole_model_export_matches_torch_and_documents_itself(
    runs: dict[str, Path], exported: headstart.export.ExportResult
) -> None:
    assert exported.path == runs["logistic"] / "model.onnx" and exported.path.is_file()
    assert exported.n_check_images == 10
    assert exported.max_abs_diff <= 1e-4 and exported.head_max_abs_diff <= 1e-4
    classes = headstart.load(runs["logistic"]).classes
    doc = json.loads(exported.metadata_path.read_text())
    assert doc["classes"] == classes
    assert doc["input"]["shape"] == ["batch", 3, 224, 224]
    assert {"resize", "crop", "mean", "std", "interpolation"} <= set(doc["preprocessing"])
    assert doc["parity"]["max_abs_diff"] == exported.max_abs_diff
    embedded = read_metadata(exported.path)  # the same facts inside the .onnx file itself
    assert embedded["classes"] == classes and embedded["preprocessing"] == doc["preprocessing"]
    props = {p.key for p in onnx.load(str(exported.path)).metadata_props}
    assert {"headstart", "classes", "preprocessing"} <= props
    # one graph, probabilities out, any batch size
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        x = np.random.default_rng(n).normal(size=(n, 3, 224, 224)).astype(np.float32)
        (p,) = session.run(None, {"images": x})
        assert p.shape == (n, len(classes)) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
    leftovers = [p.name for p in exported.path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_predict_runtime_onnx_agrees_with_default(
    runs: dict[str, Path],
    exported: headstart.export.ExportResult,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photos = tmp_path / "photos"
    shutil.copytree(demo_data_dir() / "test" / "shoes", photos / "shoes")
    shutil.copytree(demo_data_dir() / "test" / "hat", photos / "hat")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = {}
    for runtime in ("torch", "onnx"):
        argv = ["predict", str(runs["logistic"]), str(photos), "-f", "json", "-k", "3"]
        assert main([*argv, "--runtime", runtime]) == 0
        rows[runtime] = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows["torch"]] == [r["path"] for r in rows["onnx"]]
    assert len(rows["onnx"]) == 13
    for a, b in zip(rows["torch"], rows["onnx"], strict=True):
        assert (a["error"] is None) == (b["error"] is None)
        if a["error"] is None:
            assert a["top"][0]["label"] == b["top"][0]["label"]
            assert abs(a["top"][0]["probability"] - b["top"][0]["probability"]) < 1e-3
    assert sum(r["error"] is not None for r in rows["onnx"]) == 1


def test_knn_head_exports_on_first_onnx_predict(runs: dict[str, Path], check_dir: Path) -> None:
    bundle = runs["knn"]
    assert not (bundle / "model.onnx").exists()
    messages: list[str] = []
    classifier = load_onnx(bundle, check_images=check_dir, notify=messages.append)
    assert (bundle / "model.onnx").is_file() and "not exported yet" in messages[0]
    doc = json.loads((bundle / "model.onnx.json").read_text())
    assert doc["head"]["kind"] == "knn" and doc["parity"]["max_abs_diff"] <= 1e-4
    photos = sorted(p for cls in CLASSES for p in (check_dir / cls).glob("*.jpg"))
    default, _ = headstart.load(bundle).predict_proba(photos)
    onnx_proba, failures = classifier.predict_proba(photos)
    assert failures == {}
    assert np.array_equal(default.argmax(axis=1), onnx_proba.argmax(axis=1))
    assert np.max(np.abs(default - onnx_proba)) < 1e-3


def test_int8_export_via_cli_reports_accuracy_change(
    runs: dict[str, Path], check_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out" / "clf.onnx"
    argv = ["export", str(runs["logistic"]), "-o", str(target), "--quantize", "int8"]
    assert main([*argv, "--check-images", str(check_dir)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "parity: max abs probability difference" in out
    assert "accuracy on 9 labelled images" in out
    assert target.is_file() and (tmp_path / "out" / "clf.int8.onnx").is_file()
    doc = json.loads((tmp_path / "out" / "clf.onnx.json").read_text())
    int8 = doc["int8"]
    print(f"int8 vs fp32: {int8}")  # the figures, for the record (-s)
    assert int8["top1_agreement"] >= 0.8
    assert int8["accuracy_int8"] >= int8["accuracy_fp32"] - 0.2
    assert read_metadata(tmp_path / "out" / "clf.int8.onnx")["classes"] == doc["classes"]


def test_bad_format_and_quantization_are_one_line_errors(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match="'tflite'; valid: onnx"):
        export_model(runs["logistic"], fmt="tflite")
    for argv, needle in (
        (["--format", "tflite"], "valid: onnx"),
        (["--quantize", "int4"], "valid: int8"),
        (["--tolerance", "-1"], "tolerance"),
    ):
        assert main(["export", str(runs["logistic"]), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err


def test_damaged_bundle_is_a_one_line_error(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tmp_path / "model"
    shutil.copytree(runs["logistic"], damaged, ignore=shutil.ignore_patterns("*.onnx*"))
    head = damaged / "head.safetensors"
    head.write_bytes(head.read_bytes()[:-10] + b"0123456789")
    for argv in (["export", str(damaged)], ["predict", str(damaged), ".", "--runtime", "onnx"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "damaged" in err, err
    assert not (damaged / "model.onnx").exists()
    not_onnx = tmp_path / "fake.onnx"
    not_onnx.write_bytes(b"garbage")
    with pytest.raises(BundleError, match="not a readable ONNX model"):
        load_onnx(not_onnx)


def test_failed_parity_leaves_no_file(
    runs: dict[str, Path], check_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = onnx_model_module.onnx_probabilities

    def off_by_a_bit(path: Path, batch: np.ndarray) -> np.ndarray:
        return real(path, batch) + 1e-3  # what a broken exporter would give

    monkeypatch.setattr(onnx_model_module, "onnx_probabilities", off_by_a_bit)
    target = tmp_path / "out" / "model.onnx"
    with pytest.raises(ExportError, match="exceeds the tolerance"):
        export_model(runs["logistic"], output=target, check_images=check_dir / "hat")
    assert list(target.parent.iterdir()) == []
