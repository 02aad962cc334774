"""Exporting a text model: one ONNX graph (token ids -> encoder -> pooling -> heads -> OOD score)
with its tokenizer beside it, checked against the bundle's own predictions; ``load_onnx`` and
``predict --runtime onnx`` answer texts as the bundle does; a plain script that follows the
document's tokenizer steps with ``tokenizers`` and onnxruntime gets the same probabilities; the
int8 copy; what is refused.  A real MiniLM probe on three classes of eight sentences."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.bundle import read_bundle
from headstart.cli.main import main
from headstart.errors import BundleError, ConfigError
from headstart.export import ExportResult, describe, export_model, load_onnx, read_metadata
from headstart.export.runtime import _stale
from headstart.result import FitResult
from texts import SUPPORT_SENTENCES as SENTENCES

pytestmark = pytest.mark.slow  # exporting the encoder (and its int8 copy) takes ~40 s

QUERIES = [
    "my card got declined",
    "  forgot the password  ",
    "send money to my mother in Spain",
    "Le virement n'est jamais arrivé sur mon compte",
    " ".join(["why does my transfer take so long?"] * 80),  # truncated at the encoder's limit
]


@pytest.fixture(scope="module")
def run(
    shared_cache: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: None
) -> FitResult:
    """A MiniLM probe on the sentences, in a ``text`` / ``category`` CSV."""
    from headstart.config import load_config

    folder = tmp_path_factory.mktemp("text-export")
    data = folder / "texts.csv"
    with data.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "category"])
        for label, texts in SENTENCES.items():
            writer.writerows([text, label] for text in texts)
    overrides = [
        f"extract.cache_dir={shared_cache}",
        "eval.n_boot=50",
        "data.text_column=text",
        "data.label_column=category",
    ]
    config = load_config(overrides=overrides)
    return headstart.fit(data, folder / "run", config=config, progress=False, report=False)


@pytest.fixture(scope="module")
def monkeypatch_module(shared_cache: Path) -> Iterator[None]:
    """The default cache is the session's shared one: the export's check of the bundle's own
    predictions then reuses the encoder's cached ONNX export."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HEADSTART_CACHE", str(shared_cache))
    yield None
    mp.undo()


@pytest.fixture(scope="module")
def exported(run: FitResult) -> ExportResult:
    return export_model(run.bundle_dir, quantize="int8")


def test_export_matches_the_bundle(run: FitResult, exported: ExportResult) -> None:
    bundle = run.bundle_dir
    assert exported.path == bundle / "model.onnx" and exported.checked == "texts"
    assert exported.n_check_images == 9  # the built-in check texts
    assert exported.max_abs_diff <= 1e-4 and exported.head_max_abs_diff <= 1e-4
    parity = exported.tasks["label"]
    assert parity.bundle_max_abs_diff is not None and parity.bundle_max_abs_diff <= 1e-4
    assert exported.ood is not None and exported.ood.bundle_max_abs_diff is not None
    assert exported.ood.bundle_max_abs_diff <= 1e-4
    doc = json.loads((bundle / "model.onnx.json").read_text())
    assert doc["modality"] == "text" and doc["format_version"] == 5
    assert [i["name"] for i in doc["inputs"]] == ["input_ids", "attention_mask"]
    assert doc["tokenizer"]["file"] == "tokenizer.json" and doc["tokenizer"]["max_length"] == 256
    assert [s["op"] for s in doc["tokenizer"]["steps"]] == [
        "strip",
        "tokenize",
        "truncate",
        "pad",
        "feed",
    ]
    assert doc["parity"]["texts"] == 9 and doc["text_column"] == "text"
    assert (bundle / "tokenizer.json").is_file()
    assert read_metadata(exported.path)["tokenizer"]["sha256"] == doc["tokenizer"]["sha256"]


def test_onnx_runtime_answers_texts_as_the_bundle(run: FitResult, exported: ExportResult) -> None:
    model = run.model
    onnx = load_onnx(run.bundle_dir)
    assert onnx.modality == "text" and onnx.classes == model.classes
    want = model.predict([*QUERIES, "   "], top_k=3)
    got = onnx.predict([*QUERIES, "   "], top_k=3)
    assert [p.text for p in got] == [p.text for p in want]
    assert got[-1].error == "empty text" and want[-1].error == "empty text"
    for g, w in zip(got[:-1], want[:-1], strict=True):
        assert [c for c, _ in g.top] == [c for c, _ in w.top]
        assert np.allclose([p for _, p in g.top], [p for _, p in w.top], atol=1e-4)
        assert g.ood_score == pytest.approx(w.ood_score, abs=1e-4) and g.ood == w.ood
    with pytest.raises(ConfigError, match="for image models"):
        onnx.predict(QUERIES[:1], tta="flip")
    with pytest.raises(ConfigError, match="classifies texts"):
        onnx.predict_batch(np.zeros((1, 3, 224, 224), dtype=np.float32))


def test_a_plain_script_following_the_document_gets_the_same_numbers(
    run: FitResult, exported: ExportResult
) -> None:
    """Only tokenizers and onnxruntime: the document's steps are all a user needs."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    doc = json.loads(exported.metadata_path.read_text())
    tokenizer = Tokenizer.from_file(str(exported.path.parent / doc["tokenizer"]["file"]))
    encodings = tokenizer.encode_batch([t.strip() for t in QUERIES])
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    assert ids.shape[1] == 256  # the long text was truncated, the others padded to it
    session = ort.InferenceSession(str(exported.path))
    raw, ood = session.run(None, {"input_ids": ids, "attention_mask": mask})
    features, _ = run.model.embed(QUERIES)
    expected = run.model.uncalibrated_proba(features)["label"]  # the graph is uncalibrated
    assert np.abs(raw - expected).max() <= 1e-4
    assert np.abs(ood - run.model.require_ood().score(features)).max() <= 1e-4


def test_int8_copy_and_its_report(exported: ExportResult) -> None:
    q = exported.int8
    assert q is not None and q.path.name == "model.int8.onnx" and q.path.is_file()
    assert q.top1_agreement is not None and q.top1_agreement >= 0.75
    assert q.n_labelled == 0 and np.isnan(q.accuracy_int8)
    assert q.path.stat().st_size < 0.8 * exported.path.stat().st_size
    onnx = load_onnx(q.path)  # it carries the document and finds the tokenizer beside it
    (answer,) = onnx.predict(["my card got declined"])
    assert answer.top[0][0] == "card"


def test_stale_and_damaged_tokenizers(
    run: FitResult, exported: ExportResult, tmp_path: Path
) -> None:
    bundle = run.bundle_dir
    fresh = json.loads(json.dumps(describe(read_bundle(bundle))))
    assert _stale(exported.path, fresh) is None
    tokenizer = bundle / "tokenizer.json"
    original = tokenizer.read_bytes()
    try:
        tokenizer.write_bytes(original.replace(b'"[PAD]"', b'"[PAX]"', 1))
        assert _stale(exported.path, fresh) == "its tokenizer tokenizer.json is missing or changed"
        with pytest.raises(BundleError, match="not the tokenizer"):
            load_onnx(exported.path)
    finally:
        tokenizer.write_bytes(original)
    other = export_model(bundle, output=tmp_path / "x" / "clf.onnx", check_texts=QUERIES[:2])
    assert other.n_check_images == 2 and (tmp_path / "x" / "clf.tokenizer.json").is_file()
    assert load_onnx(other.path).predict(["reset my password"])[0].top[0][0] == "password"


def test_refusals_are_one_line(run: FitResult, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="checked on texts"):
        export_model(run.bundle_dir, check_images=["x.jpg"], output="/nonexistent/m.onnx")
    with pytest.raises(ConfigError, match="no usable text"):
        export_model(run.bundle_dir, check_texts=["   "], output="/nonexistent/m.onnx")
    assert main(["export", str(run.bundle_dir), "--check-images", "x.jpg"]) == 2
    err = capsys.readouterr().err.strip()
    assert "checked on texts" in err and len(err.splitlines()) == 1


def test_cli_predicts_texts_with_the_onnx_runtime(
    run: FitResult, exported: ExportResult, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["predict", str(run.bundle_dir), "my card got declined", "--runtime", "onnx", "-f", "json"]
    )
    assert code == 0
    (answer,) = json.loads(capsys.readouterr().out)
    assert answer["text"] == "my card got declined" and answer["top"][0]["label"] == "card"
