"""The studies on multi-task and multi-label data: cv, tune, compare, calibrate, rank-backbones
and compare-strategies pick a task with ``--task`` and score a multi-label one by mAP.

The data are the session's composites (two demo photos side by side): ``left`` names the left
photo's class (multi-class), ``items`` lists both (multi-label).
"""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

import headstart
from headstart.cache import CacheRoot
from headstart.cli.main import main
from headstart.config import FitConfig, load_config
from headstart.data.manifest import indicator
from headstart.data.splits import strata
from headstart.embedding import embed_data
from headstart.errors import ConfigError
from headstart.model import Model
from headstart.ranking import probe_score, rank_backbones
from headstart.result import FitResult
from headstart.stats.paired import compare_multilabel
from headstart.studies.calibrate import calibrate_bundle
from headstart.studies.compare import compare_models
from headstart.studies.cv import cross_validate, task_folds, write_cv
from headstart.studies.strategy_stats import Estimate, Key, RowSummary, RunScore, contrast
from headstart.studies.tune import tune

TWO = "data.label_column=[left,items]"
ITEMS = "data.label_column=items"
LABELS = ("hat", "pants", "shoes", "t-shirt")


def _cfg(cache: Path, *overrides: str) -> FitConfig:
    return load_config(overrides=[f"extract.cache_dir={cache}", *overrides])


def _sets(cache: Path, *overrides: str) -> list[str]:
    out = ["--set", f"extract.cache_dir={cache}"]
    for o in overrides:
        out += ["--set", o]
    return out


def _model(run: FitResult, cache: Path) -> Model:
    return headstart.load(run.bundle_dir, cache=CacheRoot.of(cache))


# ------------------------------------------------------------------ cv


def test_cv_of_a_multi_label_task_scores_map_on_rarest_label_folds(
    composites: Path, shared_cache: Path, tmp_path: Path
) -> None:
    result = cross_validate(
        composites, _cfg(shared_cache, TWO), task="items", folds=3, progress=False
    )
    assert result.task.name == "items" and result.metrics == ["mean_ap", "macro_f1"]
    assert result.classes == list(LABELS)
    cells = [result.manifest.samples[i].labels["items"] for i in result.samples]
    Y, P, fold_of = indicator(cells, LABELS), result.probabilities[0], result.fold_of[0]
    assert P.shape == (len(cells), 4) and not np.isnan(P).any()
    for f in result.folds:  # each fold's scores are sklearn's on its out-of-fold rows
        rows = fold_of == f.fold
        aps = [average_precision_score(Y[rows, j], P[rows, j]) for j in range(4)]
        assert f.scores["mean_ap"] == pytest.approx(np.mean(aps))
        assert f.scores["macro_f1"] == pytest.approx(
            f1_score(Y[rows], P[rows] >= 0.5, average="macro")
        )
    assert result.summary["mean_ap"].mean == pytest.approx(
        np.mean([f.scores["mean_ap"] for f in result.folds])
    )
    assert result.summary["mean_ap"].mean > 0.7  # the composites are easy; chance is ~0.5
    # stratified on the rarest label: each stratum spread over the folds
    by = np.array(strata(cells))
    for stratum in set(by):
        counts = np.bincount(fold_of[by == stratum], minlength=3)
        assert counts.max() - counts.min() <= 1
    out = write_cv(result, tmp_path / "cv")
    doc = json.loads((out / "cv.json").read_text())
    assert doc["task"] == "items" and doc["multi_label"] is True
    assert doc["metrics"] == ["mean_ap", "macro_f1"] and "0.5" in doc["thresholds"]
    assert set(doc["folds"][0]) == {"repeat", "fold", "n_train", "n_test", "mean_ap", "macro_f1"}
    with (out / "oof_predictions.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(cells) and {f"p:{x}" for x in LABELS} <= set(rows[0])
    for row in rows:
        above = {x for x in LABELS if float(row[f"p:{x}"]) >= 0.5}
        assert set(filter(None, row["predicted"].split("|"))) == above
        assert len(row["label"].split("|")) == 2


def test_cv_of_two_tasks_defaults_to_the_first_and_refuses_bad_input(
    composites: Path, shared_cache: Path
) -> None:
    cfg = _cfg(shared_cache, TWO)
    result = cross_validate(composites, cfg, folds=2, progress=False)
    assert result.task.name == "left" and result.metrics == ["accuracy", "macro_f1"]
    assert result.to_dict()["task"] == "left" and "thresholds" not in result.to_dict()
    with pytest.raises(ConfigError, match=r"unknown task 'nope'; .*left, items"):
        cross_validate(composites, cfg, task="nope", progress=False)
    cells = [("a", "b")] * 5 + [("b",)] * 5
    task = result.manifest.task("items")
    with pytest.raises(ConfigError, match=r"label 'b' of 'items' is on all but 0 images"):
        task_folds(replace(task, classes=("a", "b")), cells, folds=2)
    three = [*cells, ("c",), ("c",), ("c",), ("a", "c"), ("a",), ("a",)]  # a 8, b 10, c 4 of 16
    with pytest.raises(ConfigError, match=r"label 'c' of 'items' is on 4 images.*--folds 4 or"):
        task_folds(replace(task, classes=("a", "b", "c")), three, folds=5)
    assert len(task_folds(replace(task, classes=("a", "b", "c")), three, folds=4)) == 4


def test_cli_cv_of_a_single_multi_label_task(
    composites: Path, shared_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cv"
    args = ["cv", str(composites), "--folds", "2", "-o", str(out), "-q"]
    assert main([*args, *_sets(shared_cache, ITEMS)]) == 0
    text = capsys.readouterr().out
    assert "mAP and macro-F1 at threshold 0.5" in text and "mAP: " in text and "macro_f1: " in text
    assert json.loads((out / "cv.json").read_text())["task"] == "label"


# ------------------------------------------------------------------ tune


def test_tune_a_multi_label_task_then_refit_every_task(
    composites: Path, shared_cache: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = tune(
        composites, run, _cfg(shared_cache, TWO), task="items", trials=3, progress=False,
        report=False,
    )  # fmt: skip
    assert result.task == "items" and result.metric == "mean_ap"
    assert result.study_name.endswith("-items") and result.n_finished == 3
    assert 0.5 < result.best_score <= 1.0 and 0.5 < result.default_score <= 1.0
    assert "CV mAP" in result.verdict
    model = headstart.load(run / "model")
    assert [t.name for t in model.tasks] == ["left", "items"]
    kind = result.fit.config.head.kind
    assert kind == (result.best_params["head"] if result.beat_default else "logistic")
    assert result.fit.metrics["cv"]["items"].mean_ap.value > 0.5


def test_cli_tune_prints_the_fit_and_writes_its_report(
    composites: Path, shared_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["tune", str(composites), "--task", "items", "-n", "2", "-o", str(run), "-q"]
    assert main([*args, *_sets(shared_cache, TWO)]) == 0
    text = capsys.readouterr().out
    assert "tuned for task 'items'" in text and "task items: mAP" in text
    assert (run / "report.html").is_file() and "Report:" in text


# ------------------------------------------------------------------ compare


@pytest.fixture(scope="module")
def knn_two_task(
    composites: Path, shared_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> FitResult:
    """A kNN head on both tasks of the composites: model B of the comparisons."""
    cfg = _cfg(shared_cache, TWO, "head.kind=knn", "eval.n_boot=0")
    out = tmp_path_factory.mktemp("knn") / "run"
    return headstart.fit(composites, out, config=cfg, progress=False, report=False)


def test_compare_two_task_models_on_the_multi_label_task(
    two_task_run: FitResult, knn_two_task: FitResult, composites: Path, shared_cache: Path
) -> None:
    a, b = _model(two_task_run, shared_cache), _model(knn_two_task, shared_cache)
    c = compare_models(a, b, composites, task="items", n_boot=400)
    assert c.multi_label and c.metric == "mAP" and c.task == "items" and c.classes == list(LABELS)
    assert c.diff.value == pytest.approx(c.score_b - c.score_a)
    assert c.diff.low <= c.diff.value <= c.diff.high
    assert [r.name for r in c.per_class] == list(LABELS)
    assert all(r.ap_a is not None and r.ap_b is not None for r in c.per_class)
    differs = c.diff.low > 0 or c.diff.high < 0
    assert c.verdict.startswith("no significant") != differs and "exact label sets" in c.verdict
    same = compare_models(a, a, composites, task="items", n_boot=200)
    assert same.diff.low == same.diff.high == 0 and same.only_a_right == same.only_b_right == 0
    first = compare_models(a, b, composites, n_boot=200)  # default: the first task
    assert first.task == "left" and first.metric == "accuracy" and "McNemar p=" in first.verdict


def test_compare_refuses_a_model_without_the_task(
    two_task_run: FitResult, multilabel_run: FitResult, composites: Path, shared_cache: Path
) -> None:
    a, b = _model(two_task_run, shared_cache), _model(multilabel_run, shared_cache)
    with pytest.raises(ConfigError, match="model B has no task 'items'; it has label"):
        compare_models(a, b, composites, task="items")


def test_cli_compare_honours_the_cache_dir_and_writes_json(
    two_task_run: FitResult,
    knn_two_task: FitResult,
    composites: Path,
    shared_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, cache = tmp_path / "cmp.json", tmp_path / "cache"
    args = ["compare", str(two_task_run.bundle_dir), str(knn_two_task.bundle_dir), str(composites)]
    args += ["--task", "items", "--n-boot", "200", "-o", str(out), "-q"]
    assert main([*args, *_sets(cache)]) == 0
    text = capsys.readouterr().out
    assert "F1 per label" in text and "mAP B - A" in text and "AP A" in text
    doc = json.loads(out.read_text())
    assert doc["metric"] == "mAP" and doc["multi_label"] is True and len(doc["per_class"]) == 4
    assert any(p.is_file() for p in cache.rglob("*"))  # embedded where --set said


def test_multi_label_comparison_statistics_on_synthetic_scores() -> None:
    rng = np.random.default_rng(0)
    Y = rng.random((200, 3)) < 0.4
    noisy = np.clip(0.35 * Y + 0.65 * rng.random(Y.shape), 0, 1)
    sharp = np.clip(0.8 * Y + 0.2 * rng.random(Y.shape), 0, 1)
    half = np.full(3, 0.5)
    c = compare_multilabel(Y, noisy, sharp, half, half, ["x", "y", "z"], n_boot=500)
    expected = np.mean([average_precision_score(Y[:, j], sharp[:, j]) for j in range(3)])
    assert c.score_b == pytest.approx(expected)
    assert c.diff.low > 0 and c.verdict.startswith("B is better: mAP B - A")
    right_a, right_b = ((noisy >= 0.5) == Y).all(1), ((sharp >= 0.5) == Y).all(1)
    assert c.only_b_right == int((right_b & ~right_a).sum())
    assert c.only_a_right == int((right_a & ~right_b).sum())
    flipped = compare_multilabel(Y, sharp, noisy, half, half, ["x", "y", "z"], n_boot=500)
    assert flipped.verdict.startswith("A is better")
    none = compare_multilabel(Y, noisy, sharp, half, half, ["x", "y", "z"], n_boot=0)
    assert none.verdict.startswith("no interval (n_boot=0)")


# ------------------------------------------------------------------ calibrate


def test_calibrate_every_task_then_one_keeps_the_others_and_every_prediction(
    two_task_run: FitResult,
    composites: Path,
    shared_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bundle = shutil.copytree(two_task_run.bundle_dir, tmp_path / "model")
    cache = CacheRoot.of(shared_cache)
    paths = sorted((composites.parent / "test").iterdir())[:12]
    before = [p.tasks for p in headstart.load(bundle, cache=cache).predict(paths)]
    assert main(["calibrate", str(bundle), str(composites), "-q", *_sets(shared_cache)]) == 0
    text = capsys.readouterr().out
    assert "Task left: Temperature" in text and "Reliability before calibration, task left" in text
    assert "Task items: 4 temperatures (one per label)" in text and "mean per-label ECE" in text
    model = headstart.load(bundle, cache=cache)
    temps = model.temperatures
    assert isinstance(temps["left"], float) and isinstance(temps["items"], list)
    assert len(temps["items"]) == 4 and all(t > 0 for t in temps["items"])
    record = model.info["calibration"]
    assert record["method"] == "temperature" and set(record["tasks"]) == {"left", "items"}
    items = record["tasks"]["items"]
    assert items["nll_after"] <= items["nll_before"] + 1e-9 and items["split"] == "val"
    after = [p.tasks for p in model.predict(paths)]
    # thresholds moved with the temperatures: no label changes (their order may: per-label
    # temperatures reorder a multi-label image's probabilities)
    assert [{t: sorted(a[t].labels) for t in a} for a in after] == [
        {t: sorted(b[t].labels) for t in b} for b in before
    ]
    # calibrating one task keeps the other's entry; recalibrating items keeps its labels too
    calibrate_bundle(model, composites, task="left")
    again = calibrate_bundle(headstart.load(bundle, cache=cache), composites, task="items")
    assert set(again.tasks) == {"items"}
    final = headstart.load(bundle, cache=cache)
    assert final.info["calibration"]["tasks"]["items"] == items
    assert final.temperatures["left"] == pytest.approx(temps["left"])
    assert [sorted(p.tasks["items"].labels) for p in final.predict(paths)] == [
        sorted(b["items"].labels) for b in before
    ]


def test_calibrate_a_single_multi_label_model(
    multilabel_run: FitResult, composites: Path, shared_cache: Path, tmp_path: Path
) -> None:
    bundle = shutil.copytree(multilabel_run.bundle_dir, tmp_path / "model")
    result = calibrate_bundle(bundle, composites, split="val", cache=CacheRoot.of(shared_cache))
    (fitted,) = result.tasks.values()
    assert fitted.multi_label and len(fitted.temperatures) == 4
    assert result.truth["label"].shape == result.proba["label"].shape
    assert headstart.load(bundle).temperatures["label"] == fitted.temperatures
    with pytest.raises(ConfigError, match="unknown task 'items'"):
        calibrate_bundle(bundle, composites, task="items", cache=CacheRoot.of(shared_cache))


# ------------------------------------------------------------------ rank-backbones


def test_rank_backbones_for_the_multi_label_task(
    composites: Path, shared_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["rank-backbones", str(composites), "--task", "items", "-b", "mobilenet_v2", "-q"]
    assert main([*args, *_sets(shared_cache, TWO)]) == 0
    text = capsys.readouterr().out
    flat = " ".join(text.split())
    assert "mAP" in text and "(a multi-label task: scores averaged over labels)" in flat
    assert "Chosen backbone for task 'items': mobilenet_v2" in flat
    ranking = rank_backbones(
        composites, _cfg(shared_cache, TWO), task="items", backbones=["mobilenet_v2"], top=1
    )
    (row,) = ranking.rows
    assert ranking.task == "items" and ranking.metric == "mAP" and ranking.to_dict()["metric"]
    assert row.probe_on == "val" and row.probe_score is not None and 0.5 < row.probe_score <= 1


def test_probe_score_without_val_is_a_cross_validated_map(
    composites: Path, shared_cache: Path
) -> None:
    embedded = embed_data(composites, _cfg(shared_cache, TWO), progress=False)
    m = embedded.manifest
    no_val = replace(
        m, samples=[replace(s, split="train") if s.split == "val" else s for s in m.samples]
    )
    score, on, _ = probe_score(replace(embedded, manifest=no_val), no_val.task("items"))
    assert on == "cv3" and 0.5 < score <= 1.0  # mAP, not the labels' binary CV accuracy


# ------------------------------------------------------------------ compare-strategies


def test_compare_strategies_probe_on_the_multi_label_task(
    composites: Path, shared_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    args = ["compare-strategies", str(composites), "--task", "items", "-o", str(out)]
    args += ["--strategies", "probe", "--seeds", "2", "-q"]
    assert main([*args, *_sets(shared_cache, TWO)]) == 0
    text = capsys.readouterr().out
    assert "Held-out test mAP over seeds, task items" in text and "Best: probe, mAP" in text
    with (out / "results.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 and "mean_ap" in rows[0] and "accuracy" not in rows[0]
    assert all(0.5 < float(r["mean_ap"]) <= 1 and int(r["n_test"]) > 0 for r in rows)
    doc = json.loads((out / "comparison.json").read_text())
    assert doc["task"] == "items" and doc["metric"] == "mean_ap"
    assert doc["rows"][0]["mean_ap"]["n"] == 2 and "exact" in doc["test"]
    assert "| mAP % [95% CI] |" in (out / "table.md").read_text()


def test_multi_label_contrast_counts_exact_label_sets() -> None:
    truth = {0: {Path(f"{i}"): "a|b" if i % 2 else "b" for i in range(30)}}
    preds: dict[Key, dict[Path, str]] = {
        ("m", "good", 0): dict(truth[0]),
        ("m", "bad", 0): {p: ("a" if i < 20 else y) for i, (p, y) in enumerate(truth[0].items())},
    }
    runs = {
        k: RunScore("m", k[1], 0, True, s, s, 1.0, 30, "test", "mean_ap")
        for k, s in ((("m", "good", 0), 0.95), (("m", "bad", 0), 0.6))
    }

    def row(name: str, value: float) -> RowSummary:
        return RowSummary(
            name, "m", name, Estimate.of([value]), Estimate.of([value]), 1.0, "mean_ap"
        )

    c = contrast(row("good", 0.95), row("bad", 0.6), runs, preds, truth)
    assert (c.only_best_right, c.only_other_right, c.n_images) == (20, 0, 30)
    assert c.significant and "beats bad by 35.0 mAP points" in c.verdict
    assert "mean_ap_diff" in c.to_dict() and "score_diff" not in c.to_dict()
    assert runs[("m", "good", 0)].to_dict()["mean_ap"] == 0.95
