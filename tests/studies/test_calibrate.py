"""Temperature scaling: the fit, ECE in metrics, and `headstart calibrate` on a real bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import headstart
from headstart.cli.main import main
from headstart.config import load_config
from headstart.stats import Metrics, evaluate_predictions
from headstart.stats.temperature import apply_temperature, fit_temperature
from salt import copy_demo


def test_fit_temperature_recovers_the_overconfidence_factor() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=2.0, size=(4000, 5))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(5, p=p) for p in true])
    over = np.exp(3 * logits) / np.exp(3 * logits).sum(axis=1, keepdims=True)
    assert fit_temperature(over, y) == pytest.approx(3.0, rel=0.1)


def test_apply_temperature_keeps_the_predicted_class() -> None:
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    np.testing.assert_allclose(apply_temperature(proba, 1.0), proba)
    soft = apply_temperature(proba, 2.0)
    assert (soft.argmax(axis=1) == proba.argmax(axis=1)).all()
    assert (soft.max(axis=1) < proba.max(axis=1)).all()
    with pytest.raises(headstart.HeadstartError, match="temperature"):
        apply_temperature(proba, 0.0)


def test_metrics_carry_ece_and_read_old_records_without_it() -> None:
    proba = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7]])
    m = evaluate_predictions(["a", "b", "b"], ["a", "a", "b"], ["a", "b"], n_boot=10, proba=proba)
    assert m.ece is not None and 0.0 < m.ece < 1.0
    assert Metrics.from_dict(m.to_dict()) == m
    old = m.to_dict()
    del old["ece"]
    assert Metrics.from_dict(old).ece is None


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("calib")
    data = root / "data"
    copy_demo(data, ("hat", "shoes"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        cfg = load_config(overrides=["extract.engine=torch", "eval.n_boot=50"])
        headstart.fit(data, root / "run", config=cfg, progress=False, report=False)
    return root, data


def test_fit_reports_ece(run: tuple[Path, Path]) -> None:
    metrics = json.loads((run[0] / "run" / "metrics.json").read_text())
    assert metrics["cv"]["tasks"]["label"]["ece"] is not None


def test_calibrate_stores_temperature_and_predictions_use_it(
    run: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, data = run
    monkeypatch.setenv("HEADSTART_CACHE", str(root / "cache"))
    bundle = root / "run" / "model"
    paths = sorted((data / "test" / "hat").iterdir())[:3]
    before = headstart.load(bundle).predict_proba(paths)[0]
    assert main(["calibrate", str(bundle), str(data), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert "Temperature" in out and "ECE" in out and "NLL" in out
    model = headstart.load(bundle)  # the rewritten bundle verifies (digests) and loads
    t = model.temperatures["label"]
    assert isinstance(t, float) and t > 0
    after = model.predict_proba(paths)[0]
    np.testing.assert_allclose(after, apply_temperature(before, t), atol=1e-9)
    entry = model.info["calibration"]["tasks"]["label"]
    assert entry["nll_after"] <= entry["nll_before"]


def test_calibrate_rejects_a_missing_split_without_touching_the_bundle(
    run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    root, data = run
    doc = root / "run" / "model" / "model.json"
    before = doc.read_bytes()
    assert main(["calibrate", str(root / "run" / "model"), str(data), "--split", "nope"]) == 2
    assert "split 'nope'" in capsys.readouterr().err
    assert doc.read_bytes() == before
