"""``headstart ensemble``: runs of the same data become one model that predicts, evaluates,
exports and reports like any other, with its members beside it; bad input is one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import headstart
from conftest import fit_run
from headstart.cache import CacheRoot
from headstart.cli.main import main
from headstart.ensemble.runs import ensemble_runs
from headstart.errors import ConfigError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lite_run(tiny_data: Path, shared_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A second probe of the tiny data on another backbone."""
    out = tmp_path_factory.mktemp("runs") / "lite0"
    return fit_run(tiny_data, out, shared_cache, "backbone.name=efficientnet_lite0", report=False)


@pytest.mark.parametrize("method", ["vote", "select", "stack"])
def test_an_ensemble_of_runs_is_a_model_like_any_other(
    plain_run: Any, lite_run: Any, shared_cache: Path, tmp_path: Path, method: str
) -> None:
    out = tmp_path / method
    result = ensemble_runs(
        [plain_run.run_dir, lite_run.run_dir], out, method=method, progress=False,
        cache=CacheRoot.of(shared_cache),
    )  # fmt: skip
    assert result.backbone.name == "mobilenet_v2+efficientnet_lite0"
    model = headstart.load(out / "model", cache=CacheRoot.of(shared_cache))
    test = result.manifest.split("test")
    proba, failures = model.predict_proba([s.path for s in test])
    assert not failures
    # the bundle predicts what the fit scored (same heads, same calibration)
    np.testing.assert_allclose(proba, result.probabilities["test"]["label"], atol=1e-6)
    record = json.loads((out / "ensemble.json").read_text())
    assert record["method"] == method
    names = [m["name"] for m in record["members"]]
    assert names == ["plain", "lite0", f"ensemble ({method})"]
    for member in record["members"][:2]:
        entry = member["tasks"]["label"]
        assert 0 <= entry["test"] <= 1 and 0 <= entry["cv"] <= 1
        assert entry["vs_ensemble"]["verdict"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"cv", "test"} <= set(metrics)
    if method == "select":
        weights = [m["tasks"]["label"]["weight"] for m in record["members"][:2]]
        assert sum(weights) == pytest.approx(1.0)


def test_the_cli_ensembles_predicts_exports_and_reports(
    plain_run: Any, lite_run: Any, shared_cache: Path, tmp_path: Path, capsys: Any
) -> None:
    out = tmp_path / "ens"
    argv = ["ensemble", str(plain_run.run_dir), str(lite_run.run_dir), "-o", str(out), "-q"]
    assert main([*argv, "--method", "stack"]) == 0
    shown = capsys.readouterr().out
    assert "ensemble (stack)" in shown and "plain" in shown
    html = (out / "report.html").read_text()
    assert "Leaderboard" in html and "McNemar" in html
    photo = next(iter(plain_run.manifest.split("test"))).path
    assert main(["predict", str(out / "model"), str(photo), "--format", "json"]) == 0
    assert main(["export", str(out / "model"), "-o", str(tmp_path / "ens.onnx")]) == 0
    assert "parity" in capsys.readouterr().out and (tmp_path / "ens.onnx").is_file()


def test_bad_ensembles_are_one_line(
    plain_run: Any, lite_run: Any, multilabel_run: Any, tmp_path: Path, capsys: Any
) -> None:
    a, b = str(plain_run.run_dir), str(lite_run.run_dir)
    cases = {
        "at least two runs": ["ensemble", a, "-o", str(tmp_path / "one")],
        "unknown ensemble method": ["ensemble", a, b, "-o", str(tmp_path / "m"), "--method", "x"],
        "one of the runs": ["ensemble", a, b, "-o", a],
        "other data": ["ensemble", a, str(multilabel_run.run_dir), "-o", str(tmp_path / "d")],
        "holds no model": ["ensemble", a, str(tmp_path), "-o", str(tmp_path / "n")],
    }
    for needle, argv in cases.items():
        assert main([*argv, "-q"]) == 2, needle
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, (needle, err)


def test_a_multi_label_task_is_refused_in_one_line(
    multilabel_run: Any, composites: Path, shared_cache: Path, tmp_path: Path
) -> None:
    other = fit_run(
        composites, tmp_path / "other", shared_cache, "data.label_column=items",
        "backbone.name=efficientnet_lite0", report=False,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="multi-label"):
        ensemble_runs(
            [multilabel_run.run_dir, other.run_dir], tmp_path / "e", method="vote",
            progress=False, cache=CacheRoot.of(shared_cache),
        )  # fmt: skip
