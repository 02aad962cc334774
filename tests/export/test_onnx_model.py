"""ONNX export of the whole model: parity with torch, metadata, int8, ``predict --runtime onnx``,
and user errors (bad format, damaged bundle, failed parity leaves no file); for a plain model, a
two-task model (multi-class ``left`` + multi-label ``items``: one output each) and a model of one
multi-label task, calibrated or not."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import headstart
from headstart.bundle import read_bundle
from headstart.cache import CacheRoot
from headstart.cli.main import main
from headstart.config import load_config
from headstart.data.compose import compose_pairs
from headstart.demo import demo_data_dir
from headstart.errors import BundleError, ConfigError
from headstart.export import ExportError, export_model, load_onnx, read_metadata
from headstart.export import onnx_model as onnx_model_module
from salt import copy_demo

CLASSES = ("hat", "pants", "shoes")
#: The demo classes the composites are made of (each composite shows two of them).
ITEMS = ("hat", "pants", "shoes", "t-shirt")


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
    # a one-task model: the one output "probabilities", as every export before tasks had
    assert doc["output"]["name"] == "probabilities" and doc["output"]["shape"] == ["batch", 3]
    assert [o["name"] for o in doc["outputs"]] == ["probabilities", "ood_score"]
    # the OOD score in the graph, checked like the probabilities; its threshold in the document
    bundled = headstart.load(runs["logistic"])
    assert bundled.ood is not None and exported.ood is not None
    assert exported.ood.max_abs_diff <= 1e-4 and exported.ood.scorer_max_abs_diff <= 1e-4
    assert doc["ood"]["output"] == "ood_score" and doc["ood"]["in_graph"] is True
    assert doc["ood"]["threshold"] == bundled.ood.threshold and doc["ood"]["method"] == "knn"
    assert doc["parity"]["ood"]["max_abs_diff"] == exported.ood.max_abs_diff
    assert doc["tasks"] == [
        {"name": "label", "classes": classes, "multi_label": False, "output": "probabilities"}
    ]
    # the probe's own temperature (fitted on out-of-fold probabilities), applied at run time
    assert doc["calibration"]["in_graph"] is False
    assert doc["calibration"]["tasks"] == {
        "label": {"temperature": headstart.load(runs["logistic"]).temperatures["label"]}
    }
    assert list(exported.tasks) == ["label"]
    assert {"resize", "crop", "mean", "std", "interpolation"} <= set(doc["preprocessing"])
    assert doc["parity"]["max_abs_diff"] == exported.max_abs_diff
    embedded = read_metadata(exported.path)  # the same facts inside the .onnx file itself
    assert embedded["classes"] == classes and embedded["preprocessing"] == doc["preprocessing"]
    props = {p.key for p in onnx.load(str(exported.path)).metadata_props}
    assert {"headstart", "classes", "preprocessing"} <= props
    # one graph, probabilities out, any batch size
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["probabilities", "ood_score"]
    for n in (1, 3):
        x = np.random.default_rng(n).normal(size=(n, 3, 224, 224)).astype(np.float32)
        p, ood = session.run(None, {"images": x})
        assert p.shape == (n, len(classes)) and np.allclose(p.sum(axis=1), 1.0, atol=1e-5)
        assert ood.shape == (n,) and (ood > bundled.ood.threshold).all()  # noise: foreign
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
            assert b["ood_score"] == pytest.approx(a["ood_score"], abs=1e-4)
            assert a["ood"] == b["ood"]
        else:
            assert a["ood_score"] is b["ood_score"] is None
    assert sum(r["error"] is not None for r in rows["onnx"]) == 1


def test_an_export_of_format_1_still_predicts_and_is_renewed(
    runs: dict[str, Path], exported: headstart.export.ExportResult, tmp_path: Path
) -> None:
    """A file exported before tasks (document format 1: ``classes``, one output) reads as one
    multi-class task; a bundle's such export is exported anew for its tasks and calibration."""
    proto = onnx.load(str(exported.path))
    props = {p.key: p.value for p in proto.metadata_props}
    doc = json.loads(props["headstart"])
    old = {k: v for k, v in doc.items() if k not in ("outputs", "tasks", "calibration", "ood")}
    del proto.metadata_props[:]
    for key, value in {"headstart": json.dumps({**old, "format_version": 1})}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(tmp_path / "old.onnx"))
    classifier = load_onnx(tmp_path / "old.onnx")
    assert [(t.name, t.classes, t.multi_label) for t in classifier.tasks] == [
        ("label", CLASSES, False)
    ]
    photo = sorted((demo_data_dir() / "test" / "shoes").glob("*.jpg"))[0]
    (prediction,) = classifier.predict([photo])
    assert prediction.tasks["label"].labels == ["shoes"] == [prediction.top[0][0]]
    from headstart.export.runtime import _stale

    fresh = json.loads(json.dumps(headstart.export.describe(read_bundle(runs["logistic"]))))
    assert _stale(tmp_path / "old.onnx", fresh) == "exported by an older headstart"
    assert _stale(exported.path, fresh) is None
    assert prediction.ood_score is None  # its document names no OOD output
    # an export made before bundles had an OOD scorer is made anew for the scorer
    proto = onnx.load(str(exported.path))
    for prop in proto.metadata_props:
        if prop.key == "headstart":
            prop.value = json.dumps({k: v for k, v in doc.items() if k != "ood"})
    onnx.save(proto, str(tmp_path / "no-ood.onnx"))
    assert _stale(tmp_path / "no-ood.onnx", fresh) == (
        "the bundle's out-of-distribution scorer changed since"
    )


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
    assert int8["tasks"]["label"]["top1_agreement"] == int8["top1_agreement"]
    assert read_metadata(tmp_path / "out" / "clf.int8.onnx")["classes"] == doc["classes"]
    # the OOD score's matmul stays float32: its scores do not move against their threshold
    assert int8["ood_max_abs_diff"] <= 1e-4
    quantized = onnx.load(str(tmp_path / "out" / "clf.int8.onnx")).graph.node
    assert any(n.op_type == "MatMul" and n.name.startswith("/ood/") for n in quantized)


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


# ---- tasks: two tasks (one output each), one multi-label task --------------------------------


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Bundles fitted on composites of four demo classes: ``two`` (tasks left + items) and
    ``multi_label`` (items alone, a task named "label").  The composites and their embedding
    cache are the ones test_serve.py makes (same folders: made once per session)."""
    base = tmp_path_factory.getbasetemp()
    labels = base / "task-composites" / "labels.csv"
    if not labels.is_file():
        demo = copy_demo(base / "task-demo", ITEMS)
        compose_pairs(demo, labels.parent, per_image=0.5, size=96)
    root = tmp_path_factory.mktemp("export-tasks")
    out = {"photos": labels.parent / "test", "cache": base / "task-cache"}
    for name, columns in (("two", "[left,items]"), ("multi_label", "items")):
        overrides = [f"data.label_column={columns}", f"extract.cache_dir={out['cache']}"]
        cfg = load_config(overrides=[*overrides, "eval.n_boot=100"])
        run = headstart.fit(labels, root / name, config=cfg, progress=False, report=False)
        out[name] = run.run_dir / "model"
    return out


def _model(task_runs: dict[str, Path], name: str) -> headstart.Model:
    return headstart.load(task_runs[name], cache=CacheRoot.of(task_runs["cache"]))


def _photos(task_runs: dict[str, Path], n: int = 6) -> list[Path]:
    return sorted(task_runs["photos"].glob("*.jpg"))[:n]


def _same_tasks(torch_tasks: dict[str, Any], onnx_tasks: dict[str, Any]) -> None:
    """The same chosen labels and top-k per task, probabilities within 1e-4."""
    assert torch_tasks.keys() == onnx_tasks.keys()
    for task, answer in torch_tasks.items():
        other = onnx_tasks[task]
        assert answer["labels"] == other["labels"], task
        assert [t["label"] for t in answer["top"]] == [t["label"] for t in other["top"]], task
        expected = [t["probability"] for t in answer["top"]]
        assert [t["probability"] for t in other["top"]] == pytest.approx(expected, abs=1e-4)


def test_two_tasks_export_as_one_graph_with_an_output_each(task_runs: dict[str, Path]) -> None:
    bundle = task_runs["two"]
    model = _model(task_runs, "two")
    result = export_model(bundle, check_images=_photos(task_runs), quantize="int8")
    names = ["probabilities:left", "probabilities:items"]
    assert [p.output for p in result.tasks.values()] == names and list(result.tasks) == [
        "left",
        "items",
    ]
    for parity in result.tasks.values():  # onnxruntime vs torch, torch vs the numpy heads
        assert parity.max_abs_diff <= 1e-4 and parity.head_max_abs_diff <= 1e-4
    assert result.ood is not None and result.ood.max_abs_diff <= 1e-4
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [*names, "ood_score"]
    x = np.random.default_rng(0).normal(size=(3, 3, 224, 224)).astype(np.float32)
    left, items, ood = session.run(None, {"images": x})
    assert ood.shape == (3,)  # one OOD score per image, whatever the tasks
    assert left.shape == items.shape == (3, len(ITEMS))
    assert np.allclose(left.sum(axis=1), 1.0, atol=1e-5)  # softmax
    assert ((items > 0) & (items < 1)).all()  # independent sigmoids
    doc = json.loads(result.metadata_path.read_text())
    assert "output" not in doc and [o["name"] for o in doc["outputs"]] == [*names, "ood_score"]
    assert doc["classes"] == list(ITEMS)  # the first task's
    left_doc, items_doc = doc["tasks"]
    assert left_doc == {
        "name": "left", "classes": list(ITEMS), "multi_label": False, "output": names[0]
    }  # fmt: skip
    thresholds = model.thresholds(model.task("items"))
    assert thresholds is not None
    assert items_doc["multi_label"] and items_doc["thresholds"] == thresholds.tolist()
    assert set(doc["calibration"]["tasks"]) == {"left", "items"}  # the probe's temperatures
    assert read_metadata(result.path)["tasks"] == doc["tasks"]
    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert json.loads(props["tasks"]) == doc["tasks"]
    int8 = result.int8
    assert int8 is not None and int8.path.is_file()
    agreement = int8.tasks["left"].top1_agreement
    assert agreement is not None and agreement >= 0.8
    assert int8.tasks["items"].top1_agreement is None  # multi-label: the largest change only
    assert 0 <= int8.tasks["items"].max_abs_diff < 0.1
    outputs = ort.InferenceSession(str(int8.path)).get_outputs()
    assert [o.name for o in outputs] == [*names, "ood_score"]
    assert doc["int8"]["tasks"]["items"]["accuracy_fp32"] is None


@pytest.mark.parametrize("name", ["two", "multi_label"])
def test_onnx_runtime_answers_like_torch(
    task_runs: dict[str, Path],
    name: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``predict --runtime onnx --format json`` gives the same ``tasks`` as torch, an unreadable
    file included; the classifier's probabilities match, TTA too."""
    load_onnx(task_runs[name], check_images=_photos(task_runs, 3))  # exported when missing
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in _photos(task_runs, 4):
        shutil.copy(photo, photos / photo.name)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    monkeypatch.setenv("HEADSTART_CACHE", str(task_runs["cache"]))
    rows = {}
    for runtime in ("torch", "onnx"):
        argv = ["predict", str(task_runs[name]), str(photos), "-f", "json", "-k", "4"]
        assert main([*argv, "--runtime", runtime]) == 0, capsys.readouterr().err
        rows[runtime] = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in rows["torch"]] == [r["path"] for r in rows["onnx"]]
    assert sum(r["error"] is not None for r in rows["onnx"]) == 1
    for a, b in zip(rows["torch"], rows["onnx"], strict=True):
        assert (a["error"] is None) == (b["error"] is None)
        _same_tasks(a["tasks"], b["tasks"])
        if a["error"] is None:
            assert b["ood_score"] == pytest.approx(a["ood_score"], abs=1e-4)
    classifier = load_onnx(task_runs[name])  # exported: no new export
    model = _model(task_runs, name)
    assert classifier.tasks == model.tasks
    assert classifier.ood_threshold == model.ood_threshold is not None
    for tta in ("none", "flip"):
        got, ood, failures = classifier.scored(_photos(task_runs, 4), tta=tta)
        want, want_ood, _ = model.scored(_photos(task_runs, 4), tta=tta)
        assert failures == {} and ood is not None and want_ood is not None
        for task in model.tasks:
            np.testing.assert_allclose(got[task.name], want[task.name], atol=1e-4)
        np.testing.assert_allclose(ood, want_ood, atol=1e-4)  # the centre view's, with TTA


@pytest.mark.slow
def test_calibrated_tasks_are_applied_by_the_runtime_and_recalibration_reexports(
    task_runs: dict[str, Path], tmp_path: Path
) -> None:
    """Temperatures stay out of the graph (its outputs are the heads' own probabilities, checked
    against them); the runtime applies them as the library does, and a bundle calibrated anew
    is exported anew."""
    bundle = tmp_path / "model"
    model = _model(task_runs, "two")
    model.set_calibration(
        {
            "method": "temperature",
            "tasks": {
                "left": {"temperature": 2.5},
                "items": {"temperatures": [0.5, 1.5, 2.0, 1.0]},
            },
        }
    )
    model.save(bundle)
    calibrated = headstart.load(bundle, cache=CacheRoot.of(task_runs["cache"]))
    messages: list[str] = []
    classifier = load_onnx(bundle, check_images=_photos(task_runs, 3), notify=messages.append)
    assert "not exported yet" in messages[0]
    doc = json.loads((bundle / "model.onnx.json").read_text())
    assert doc["calibration"]["in_graph"] is False
    assert doc["calibration"]["tasks"] == {
        "left": {"temperature": 2.5},
        "items": {"temperatures": [0.5, 1.5, 2.0, 1.0]},
    }
    photos = _photos(task_runs, 4)
    got, _ = classifier.task_proba(photos, tta="flip")
    want, _ = calibrated.task_proba(photos, tta="flip")
    for task in calibrated.tasks:
        np.testing.assert_allclose(got[task.name], want[task.name], atol=1e-4)
    for a, b in zip(calibrated.predict(photos), classifier.predict(photos), strict=True):
        _same_tasks(a.to_dict()["tasks"], b.to_dict()["tasks"])
    # the same head, another calibration (Model.save would write a new folder, without the
    # export): the exported file is stale
    info = json.loads((bundle / "model.json").read_text())
    del info["calibration"]
    (bundle / "model.json").write_text(json.dumps(info))
    messages.clear()
    assert load_onnx(bundle, check_images=_photos(task_runs, 3), notify=messages.append)
    assert "calibration changed" in messages[0]
    assert json.loads((bundle / "model.onnx.json").read_text())["calibration"] is None
