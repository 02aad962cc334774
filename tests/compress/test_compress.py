"""``headstart compress``: each method's result is a bundle that predicts and exports, every
result (the original first) is measured the same way into compress.json and the report, the
Pareto front is right, and bad input is one line before any work."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from headstart.cli.main import main
from headstart.compress import Record, parse_methods
from headstart.compress.run import pareto_front
from headstart.errors import HeadstartError
from headstart.report.compress import compress_page


@pytest.fixture(autouse=True)
def _short_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing rounds of 0.2 s, not 2 s: these tests check what is measured and written, not
    the speed (benchmarks/ measure that)."""
    import headstart.compress.measure as measure

    monkeypatch.setattr(measure, "SECONDS", 0.2)


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], needle: str) -> None:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and needle in err, err


def test_methods_parse_with_defaults_and_names() -> None:
    methods = parse_methods("int8, prune:0.5 ,distill:mobilenet_v2")
    assert [m.name for m in methods] == ["int8", "prune-0.5", "distill-mobilenet_v2"]
    assert methods[1].ratio == 0.5 and methods[2].student == "mobilenet_v2"
    # bare names take the defaults: 30% of channels, a mobilenet_v2 student
    assert [m.name for m in parse_methods("prune,distill")] == ["prune-0.3", "distill-mobilenet_v2"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "no compression method"),
        ("int4", "unknown compression method 'int4'"),
        ("prune:1.5", "between 0 and 1"),
        ("prune:lots", "not a number"),
        ("int8:fast", "int8 takes no argument"),
        ("distill:no_such_net", "no_such_net"),
        ("distill:mobilenet_v2+efficientnet_lite0", "fused"),
        ("prune:0.3,prune:0.30", "listed twice"),
        ("prune,prune:0.3", "listed twice"),
    ],
)
def test_bad_methods_are_refused(text: str, needle: str) -> None:
    with pytest.raises(HeadstartError, match=needle) as info:
        parse_methods(text)
    assert "\n" not in str(info.value)


def _record(method: str, acc: float, speed: float, size: int) -> Record:
    return Record(
        method, "accuracy", acc, (acc - 0.05, acc + 0.05), speed, size, None, "b", "o", 1.0
    )


def test_the_pareto_front_keeps_only_undominated_results() -> None:
    records = [
        _record("original", 0.90, 100.0, 9_000_000),
        _record("int8", 0.89, 100.0, 3_000_000),  # smaller: on the front
        _record("worse", 0.88, 90.0, 9_000_000),  # beaten on every axis by the original
        _record("fast", 0.80, 300.0, 9_000_000),  # fastest: on the front
        _record("tie", 0.90, 100.0, 9_000_000),  # equal to the original: neither dominates
    ]
    assert pareto_front(records) == [True, True, False, True, True]


def test_the_report_page_has_the_table_and_the_plot() -> None:
    records = [_record("original", 0.9, 100.0, 9_000_000), _record("int8", 0.89, 150.0, 3_000_000)]
    for r, front in zip(records, pareto_front(records), strict=True):
        r.pareto = front
    doc = {
        "split": "test",
        "n_images": 40,
        "machine": "AVX2, 2 threads",
        "timing": "images/s",
        "size": "bytes",
        "results": [r.__dict__ for r in records],
    }
    html = compress_page(doc, "runs/x/model", "data")
    assert "<svg" in html and "Pareto" in html and "1.50x" in html and "0.33x" in html
    assert "<script" not in html


def test_bad_input_is_one_line_before_any_work(
    capsys: pytest.CaptureFixture[str], plain_run: object, tiny_data: Path, tmp_path: Path
) -> None:
    bundle = str(plain_run.bundle_dir)  # type: ignore[attr-defined]
    out = tmp_path / "out"
    _one_line_error(
        capsys, ["compress", bundle, str(tiny_data), "-o", str(out), "--methods", "zip"], "zip"
    )
    unsplit = tmp_path / "unsplit"
    shutil.copytree(tiny_data / "train", unsplit / "train")
    shutil.copytree(tiny_data / "validation", unsplit / "validation")
    _one_line_error(
        capsys, ["compress", bundle, str(unsplit), "-o", str(out), "--methods", "int8"], "test"
    )
    _one_line_error(
        capsys,
        ["compress", str(tmp_path), str(tiny_data), "-o", str(out), "--methods", "int8"],
        str(tmp_path),
    )
    assert not out.exists()


@pytest.mark.slow
def test_int8_compress_writes_measured_records_and_a_report(
    capsys: pytest.CaptureFixture[str],
    plain_run: object,
    tiny_data: Path,
    tmp_path: Path,
    shared_cache: Path,
) -> None:
    import headstart

    bundle = plain_run.bundle_dir  # type: ignore[attr-defined]
    out = tmp_path / "small"
    argv = ["compress", str(bundle), str(tiny_data), "-o", str(out), "--methods", "int8", "-q"]
    argv += ["--set", f"extract.cache_dir={shared_cache}"]
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "original" in printed and "int8" in printed
    doc = json.loads((out / "compress.json").read_text())
    methods = [r["method"] for r in doc["results"]]
    assert methods == ["original", "int8"]
    original, int8 = doc["results"]
    for r in doc["results"]:
        assert set(r) >= {"method", "accuracy", "images_per_s", "size_bytes", "bundle"}
        assert 0.0 <= r["accuracy"] <= 1.0 and r["images_per_s"] > 0 and r["size_bytes"] > 0
        assert Path(r["onnx"]).is_file()
    # the int8 backbone is about a quarter of the float32 one (the heads and OOD bank stay)
    assert int8["backbone_bytes"] < 0.5 * original["backbone_bytes"]
    assert int8["size_bytes"] < original["size_bytes"]
    assert doc["n_images"] == len(list((tiny_data / "test").rglob("*.jpg")))
    assert abs(int8["accuracy"] - original["accuracy"]) <= 0.1
    assert (out / "report.html").is_file()
    # the result is an ordinary bundle: it loads and predicts
    model = headstart.load(int8["bundle"])
    predictions = model.predict(sorted((tiny_data / "test").rglob("*.jpg"))[:3])
    assert all(p.error is None for p in predictions)
    # the original bundle was only read
    assert not (bundle / "model.onnx").exists() or original["onnx"] != str(bundle / "model.onnx")
    # a second run into the same folder is refused unless --overwrite
    _one_line_error(capsys, argv, "--overwrite")


@pytest.mark.slow
def test_prune_and_distill_results_are_bundles_that_load(
    capsys: pytest.CaptureFixture[str],
    plain_run: object,
    tiny_data: Path,
    tmp_path: Path,
    shared_cache: Path,
) -> None:
    import headstart
    from headstart.compress import compress
    from headstart.config import load_config

    cfg = load_config(
        overrides=[
            f"extract.cache_dir={shared_cache}",
            "train.epochs=1",
            "train.frozen_epochs=0",
            "train.batch_size=16",
        ]
    )
    result = compress(
        plain_run.bundle_dir,  # type: ignore[attr-defined]
        tiny_data,
        tmp_path / "small",
        methods="prune:0.5,distill:mobilenet_v2",
        config=cfg,
        progress=False,
        n_boot=50,
    )
    assert [r.method for r in result.records] == ["original", "prune-0.5", "distill-mobilenet_v2"]
    pruned = result.records[1]
    assert pruned.size_bytes < result.records[0].size_bytes
    for r in result.records[1:]:
        model = headstart.load(r.bundle)
        assert model.predict(sorted((tiny_data / "test").rglob("*.jpg"))[:2])[0].error is None
