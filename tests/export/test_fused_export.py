"""A fused backbone (``-b mobilenet_v2+efficientnet_lite0``) end to end: ``headstart fit`` from
the CLI (bundle and report), the bundle's round trip, predictions as in the fit, one ONNX graph
holding both backbones (parity, its document, the onnxruntime path with and without TTA), the
web service, and explain's one-line refusal."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from fastapi.testclient import TestClient

import headstart
from headstart.backbones import resolve_backbone
from headstart.bundle import FUSED_FORMAT_VERSION, read_bundle, write_bundle
from headstart.cache import CacheRoot
from headstart.cli.main import main
from headstart.data.images import load_rgb
from headstart.explain import explain_many
from headstart.export import export_model, load_onnx
from headstart.serve import create_app
from salt import copy_demo
from serving import files, photo

pytestmark = pytest.mark.slow

FUSED = "mobilenet_v2+efficientnet_lite0"
CLASSES = ("hat", "pants", "shoes")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, shared_cache: Path) -> Path:
    """``headstart fit DATA -b mobilenet_v2+efficientnet_lite0`` on 45 demo photos, with its
    report, through the CLI."""
    root = tmp_path_factory.mktemp("fused")
    data = copy_demo(root / "data", CLASSES, {"train": 8, "validation": 3, "test": 4})
    out = root / "run"
    overrides = [f"extract.cache_dir={shared_cache}", "eval.n_boot=50"]
    args = ["fit", str(data), "-b", FUSED, "-o", str(out), "-q"]
    assert main([*args, *(a for o in overrides for a in ("--set", o))]) == 0
    return out


@pytest.fixture(scope="module")
def model(run: Path, shared_cache: Path) -> headstart.Model:
    return headstart.load(run / "model", cache=CacheRoot.of(shared_cache))


@pytest.fixture(scope="module")
def tests(run: Path) -> list[Path]:
    return sorted((run.parent / "data" / "test").rglob("*.jpg"))


def test_the_cli_fit_writes_a_fused_bundle_and_a_report(run: Path, model: headstart.Model) -> None:
    info = json.loads((run / "model" / "model.json").read_text())
    assert info["format_version"] == FUSED_FORMAT_VERSION == 4
    assert [p["name"] for p in info["backbone"]["parts"]] == FUSED.split("+")
    assert {"backbone-0.safetensors", "backbone-1.safetensors"} <= set(info["files"])
    assert "backbone.safetensors" not in info["files"]
    assert model.backbone_ref.is_fused and model.backbone_name == FUSED
    assert model.backbone_ref.feature_dim == 2560 == model.ood.feature_dim  # type: ignore[union-attr]
    assert FUSED in (run / "report.html").read_text()


def test_the_bundle_predicts_as_in_the_fit(run: Path, model: headstart.Model) -> None:
    with (run / "predictions.csv").open() as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    paths = [run.parent / "data" / r["path"] for r in rows]
    proba, failures = model.predict_proba(paths)
    written = np.array([[float(r[f"p:{c}"]) for c in model.classes] for r in rows])
    assert not failures and len(rows) == 12
    np.testing.assert_allclose(proba, written, atol=2e-6)


def test_a_fused_bundle_round_trips(
    run: Path, model: headstart.Model, tests: list[Path], tmp_path: Path
) -> None:
    again = headstart.load(model.save(tmp_path / "copy"), cache=model.cache)
    shas = [p.weights_sha256 for p in model.backbone_ref.parts]
    assert again.backbone_ref.weights_sha256 == model.backbone_ref.weights_sha256
    assert [p.weights_sha256 for p in again.backbone_ref.parts] == shas
    for name in ("backbone-0.safetensors", "backbone-1.safetensors"):
        assert (tmp_path / "copy" / name).read_bytes() == (run / "model" / name).read_bytes()
    np.testing.assert_array_equal(again.predict_proba(tests)[0], model.predict_proba(tests)[0])
    np.testing.assert_array_equal(again.ood_scores(tests)[0], model.ood_scores(tests)[0])
    # without weights files, each part comes from the registry, checked by its hash
    c = read_bundle(run / "model")
    bare = write_bundle(tmp_path / "bare", tasks=c.tasks, heads=c.heads, backbone=c.backbone)
    read = read_bundle(bare)
    assert read.backbone.weights_sha256 == c.backbone.weights_sha256
    assert [p.weights_path for p in read.backbone.parts] == [
        resolve_backbone(p.name).weights_path for p in c.backbone.parts
    ]


def test_one_onnx_graph_holds_both_backbones(
    run: Path, model: headstart.Model, tests: list[Path]
) -> None:
    result = export_model(run / "model", check_images=run.parent / "data" / "test")
    assert result.n_check_images == 12 and result.max_abs_diff <= 1e-4
    assert result.ood is not None and result.ood.max_abs_diff <= 1e-4
    graph = onnx.load(str(result.path)).graph
    shapes = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim][1:] for i in graph.input}
    assert shapes == {"images_0": [3, 224, 224], "images_1": [3, 224, 224]}
    doc = json.loads(result.metadata_path.read_text())
    assert doc["format_version"] == 4 and "input" not in doc and "preprocessing" not in doc
    parts = model.backbone_ref.parts
    for entry, part, name in zip(doc["inputs"], parts, ("images_0", "images_1"), strict=True):
        assert entry["name"] == name and entry["backbone"] == part.name
        prep = {k: v for k, v in entry["preprocessing"].items() if k != "steps"}
        assert prep == json.loads(json.dumps(part.preprocessing.to_dict()))
        assert f"the graph's input '{name}'" in entry["preprocessing"]["steps"][-1]["text"]
    assert [p["input"] for p in doc["backbone"]["parts"]] == ["images_0", "images_1"]
    assert re.search(r"'images_0': batch_0, 'images_1': batch_1", " ".join(doc["usage"]))
    messages: list[str] = []
    classifier = load_onnx(run / "model", notify=messages.append)
    assert not messages  # the export is current: nothing exported again
    for tta in ("none", "flip"):
        expected = model.predict_proba(tests, tta=tta)[0]
        np.testing.assert_allclose(classifier.predict_proba(tests, tta)[0], expected, atol=1e-4)
    scores, _ = model.ood_scores(tests)
    served = classifier.predict(tests)
    np.testing.assert_allclose([p.ood_score for p in served], scores, atol=1e-4)


def test_the_service_answers_for_a_fused_bundle(model: headstart.Model, tests: list[Path]) -> None:
    app = create_app(model, allow_hosts=["testserver"])
    with TestClient(app) as client:
        info = client.get("/v1/model").json()
        assert info["backbone"]["name"] == FUSED and info["explain"] is False
        body = files(("a.jpg", tests[0].read_bytes()), ("b.jpg", photo("shoes")))
        answer = client.post("/v1/predict", files=body)
        assert answer.status_code == 200, answer.text
        expected = model.predict_images([load_rgb(tests[0], draft_size=256)])[model.tasks[0].name]
        top = answer.json()["results"][0]["top"][0]
        assert top["probability"] == pytest.approx(float(expected.max()), abs=1e-5)
        refused = client.post("/v1/explain", files=files(("a.jpg", tests[0].read_bytes())))
        assert refused.status_code == 422
        assert "Grad-CAM needs one backbone" in refused.json()["error"]


def test_explain_refuses_a_fusion_in_one_line(
    run: Path, model: headstart.Model, tests: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["explain", str(run / "model"), str(tests[0])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"Grad-CAM needs one backbone; got the fused '{FUSED}'" in err
    results = explain_many(model, tests[:2])  # the report's path: a note beside each photo
    assert [type(r).__name__ for r in results] == ["BackboneError"] * 2
