"""End to end through the library: fit on the tiny demo data (one task) and on its composites
(two tasks; one multi-label task), cache reuse, load, predict, evaluate, the run folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import headstart
from conftest import TINY_CLASSES, fit_run
from headstart.demo import demo_data_dir
from headstart.errors import ConfigError, DataError
from headstart.result import FitResult
from headstart.stats import Metrics, MultiLabelMetrics
from salt import make_bad_files


def test_fit_writes_a_complete_run(plain_run: FitResult) -> None:
    run = plain_run.run_dir
    for name in ("manifest.csv", "problems.csv", "config.yaml", "metrics.json", "run.json"):
        assert (run / name).is_file(), name
    info = json.loads((run / "model" / "model.json").read_text())
    assert [t["task"] for t in info["tasks"]] == [
        {"name": "label", "classes": list(TINY_CLASSES), "multi_label": False}
    ]
    assert info["backbone"]["name"] == "mobilenet_v2"
    assert set(info["metrics"]) == {"cv", "test"}
    assert info["versions"]["torch"]
    assert info["data_hash"] == plain_run.manifest.data_hash()
    header = next(csv.reader((run / "predictions.csv").open()))
    assert header[:5] == ["path", "split", "label", "predicted", "confidence"]
    assert header[5:] == [f"p:{c}" for c in TINY_CLASSES]


def test_real_photos_are_classified_well(plain_run: FitResult) -> None:
    acc = plain_run.metrics["test"]["label"]
    assert isinstance(acc, Metrics)
    assert acc.accuracy.value >= 0.8, acc  # 4 easy clothing classes, pretrained features
    assert acc.accuracy.low <= acc.accuracy.value <= acc.accuracy.high


def test_second_fit_uses_only_the_cache(
    plain_run: FitResult, tiny_data: Path, shared_cache: Path, tmp_path: Path
) -> None:
    assert plain_run.extraction is not None
    ex = plain_run.extraction
    assert ex.n_computed + ex.n_cached == len(plain_run.manifest.samples) == 128
    again = fit_run(tiny_data, tmp_path / "again", shared_cache, report=False)
    assert again.extraction.n_computed == 0  # type: ignore[attr-defined]
    np.testing.assert_allclose(
        again.probabilities["test"]["label"],
        plain_run.probabilities["test"]["label"],  # type: ignore[attr-defined]
    )


def test_load_predict_matches_fit_metrics(plain_run: FitResult, tiny_data: Path) -> None:
    preds = plain_run.model.predict([tiny_data / "test"], top_k=2)
    assert len(preds) == len(plain_run.manifest.split("test"))
    assert all(p.error is None and len(p.top) == 2 for p in preds)
    assert all(
        list(p.tasks) == ["label"] and p.tasks["label"].labels == [p.top[0][0]] for p in preds
    )
    truth = [p.path.parent.name for p in preds]
    acc = np.mean([p.top[0][0] == t for p, t in zip(preds, truth, strict=True)])
    test = plain_run.metrics["test"]["label"]
    assert isinstance(test, Metrics)
    assert acc == pytest.approx(test.accuracy.value)


def test_evaluate_data_uses_the_test_split(plain_run: FitResult, tiny_data: Path) -> None:
    result = headstart.evaluate_data(plain_run.model, tiny_data, progress=False)
    assert result.split == "test"
    m, fitted = result.metrics["label"], plain_run.metrics["test"]["label"]
    assert isinstance(m, Metrics) and isinstance(fitted, Metrics)
    assert m.accuracy.value == pytest.approx(fitted.accuracy.value)


def test_two_tasks_are_fitted_scored_and_predicted(
    two_task_run: FitResult, composites: Path
) -> None:
    assert [t.name for t in two_task_run.tasks] == ["left", "items"]
    assert [t.multi_label for t in two_task_run.tasks] == [False, True]
    for split in ("cv", "test"):
        assert isinstance(two_task_run.metrics[split]["left"], Metrics)
        assert isinstance(two_task_run.metrics[split]["items"], MultiLabelMetrics)
    header = next(csv.reader((two_task_run.run_dir / "predictions.csv").open()))
    assert header[:5] == ["path", "split", "label:left", "predicted:left", "confidence:left"]
    assert "p:items:hat" in header and "predicted:items" in header
    model = two_task_run.model
    preds = model.predict([composites.parent / "test"], top_k=2)
    assert preds and all(set(p.tasks) == {"left", "items"} for p in preds)
    thresholds = model.thresholds(model.task("items"))
    assert thresholds is not None and thresholds.shape == (4,)
    for p in preds:
        items = dict(p.tasks["items"].top)
        chosen = p.tasks["items"].labels
        assert all(items[c] >= thresholds[TINY_CLASSES.index(c)] for c in chosen)
    evaluated = headstart.evaluate_data(model, composites, progress=False)
    assert set(evaluated.metrics) == {"left", "items"}
    mine = evaluated.metrics["items"]
    fitted = two_task_run.metrics["test"]["items"]
    assert isinstance(mine, MultiLabelMetrics) and isinstance(fitted, MultiLabelMetrics)
    assert mine.mean_ap.value == pytest.approx(fitted.mean_ap.value)


def test_one_multi_label_task(multilabel_run: FitResult) -> None:
    (task,) = multilabel_run.tasks
    assert task.name == "label" and task.multi_label
    test = multilabel_run.metrics["test"]["label"]
    assert isinstance(test, MultiLabelMetrics)
    assert test.mean_ap.value > 0.5  # chance is about 0.5 for two of four items


def test_bad_images_get_error_rows(plain_run: FitResult, tmp_path: Path) -> None:
    expected = make_bad_files(tmp_path)
    good = tmp_path / "good.jpg"
    shutil.copy(next((demo_data_dir() / "test" / "hat").glob("*.jpg")), good)
    preds = {p.path.name: p for p in plain_run.model.predict([tmp_path])}
    assert preds["good.jpg"].error is None
    for name in expected:
        if name in preds:
            assert preds[name].error and not preds[name].tasks, name


def test_salted_folder_fits_and_reports_every_bad_file(
    tiny_data: Path, shared_cache: Path, tmp_path: Path
) -> None:
    data = tmp_path / "salted"
    shutil.copytree(tiny_data, data)
    expected = make_bad_files(data / "train" / "hat")
    shutil.copy(next((data / "train" / "pants").glob("*.jpg")), data / "test" / "pants" / "dup.jpg")
    result = fit_run(data, tmp_path / "run", shared_cache, report=False)
    reported = {p.path.name: p.reason for p in result.manifest.problems}  # type: ignore[attr-defined]
    for name, reason in expected.items():
        assert name in reported, name
        assert reason in reported[name], (name, reported[name])
    assert any(g.cross_split for g in result.manifest.duplicates)  # type: ignore[attr-defined]
    problems = (tmp_path / "run" / "problems.csv").read_text()
    assert all(name in problems for name in expected)
    assert "duplicate across splits" in problems


def test_existing_run_is_not_overwritten_silently(plain_run: FitResult, tiny_data: Path) -> None:
    before = (plain_run.bundle_dir / "model.json").read_bytes()
    with pytest.raises(ConfigError, match="--overwrite"):
        headstart.fit(tiny_data, plain_run.run_dir, progress=False)
    assert (plain_run.bundle_dir / "model.json").read_bytes() == before


def test_a_class_with_only_bad_images_is_a_user_error(tmp_path: Path) -> None:
    data = tmp_path / "d"
    shutil.copytree(demo_data_dir() / "train" / "hat", data / "hat")
    (data / "broken").mkdir()
    (data / "broken" / "a.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="broken"):
        headstart.fit(data, tmp_path / "run", progress=False)


def test_every_cache_honours_the_configured_root(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "default-root"
    monkeypatch.setenv("HEADSTART_CACHE", str(default))
    mine = tmp_path / "configured"
    fit_run(tiny_data, tmp_path / "run", mine)
    assert (mine / "tables").is_dir() and (mine / "heads").is_dir()
    assert (mine / "weights").is_dir()
    assert not default.exists(), sorted(p.name for p in default.iterdir())


def test_a_label_on_every_training_image_is_a_one_line_error(
    composites: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from headstart.cli.main import main

    rows = list(csv.reader(composites.open()))
    rows[0].append("tags")
    for row in rows[1:]:
        row.append("photo|" + row[2])
    data = composites.parent / "always.csv"
    with data.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    argv = ["fit", str(data), "-o", str(tmp_path / "run"), "--set", "data.label_column=tags"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "label 'photo' of 'label' is on every training image" in err


def test_the_probe_trains_on_train_and_val_and_validates_by_cross_validation(
    plain_run: FitResult,
) -> None:
    """Data with a test split: val joins train (nothing needs it), the validation numbers are
    out-of-fold ones over those images, and a temperature fitted on them ships in the bundle."""
    m = plain_run.manifest
    cv, test = plain_run.metrics["cv"]["label"], plain_run.metrics["test"]["label"]
    assert cv.n == len(m.split("train")) + len(m.split("val")) == 104
    assert test.n == len(m.split("test")) == 24
    assert "cross-validation" in plain_run.validation
    (temperature,) = plain_run.model.temperatures.values()
    assert isinstance(temperature, float) and 0.05 < temperature < 20
    record = json.loads((plain_run.run_dir / "run.json").read_text())
    assert "cross-validation" in record["validation"]


def test_without_a_test_split_val_is_the_held_out_split(
    tiny_data: Path, shared_cache: Path, tmp_path: Path
) -> None:
    data = tmp_path / "no-test"
    for split in ("train", "validation"):
        shutil.copytree(tiny_data / split, data / split)
    result = fit_run(data, tmp_path / "run", shared_cache, report=False)
    assert set(result.metrics) == {"cv", "val"}  # type: ignore[attr-defined]
    assert result.metrics["cv"]["label"].n == 80  # type: ignore[attr-defined]


def test_unsplit_data_gets_train_and_test_only_for_the_probe(
    tiny_data: Path, shared_cache: Path, tmp_path: Path
) -> None:
    data = tmp_path / "flat"
    for cls in TINY_CLASSES:
        for split in ("train", "validation", "test"):
            for f in (tiny_data / split / cls).iterdir():
                (data / cls).mkdir(parents=True, exist_ok=True)
                shutil.copy(f, data / cls / f"{split}-{f.name}")
    result = fit_run(data, tmp_path / "run", shared_cache, report=False)
    assert result.manifest.splits_present() == ["train", "test"]  # type: ignore[attr-defined]
    from headstart.data import scan

    carved = scan(data)  # what fine-tuning scans: a val split as well, the same test split
    assert carved.splits_present() == ["train", "val", "test"]
    assert {s.path for s in carved.split("test")} == {
        s.path
        for s in result.manifest.split("test")  # type: ignore[attr-defined]
    }


def _foreign_images(folder: Path) -> Path:
    """Flat colours and noise: images that are no photo of any of the trained classes."""
    from PIL import Image

    from salt import make_image

    for i, colour in enumerate([(0, 0, 0), (250, 250, 250), (20, 150, 40)]):
        make_image(folder / f"flat{i}.png", (120, 90), colour)
    noise = np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "noise.png")
    return folder


def test_predictions_and_evaluation_carry_the_ood_score(
    plain_run: FitResult, tiny_data: Path, tmp_path: Path
) -> None:
    from headstart.evaluation import evaluate_data

    model = plain_run.model
    assert model.ood is not None and model.ood_threshold == model.ood.threshold
    foreign = _foreign_images(tmp_path / "foreign")
    tests = tiny_data / "test"
    predictions = model.predict([tests, foreign])
    for p in predictions:
        assert p.ood_score is not None and p.ood == (p.ood_score > model.ood.threshold)
        assert p.to_dict()["ood"] is p.ood and isinstance(p.to_dict()["ood_score"], float)
    inside = [p for p in predictions if foreign not in p.path.parents]
    outside = [p for p in predictions if foreign in p.path.parents]
    assert len(outside) == 4 and all(p.ood for p in outside)
    assert np.mean([p.ood for p in inside]) <= 0.2
    # with test-time augmentation the score is the centre view's: the view the threshold knows
    flipped = model.predict([foreign], tta="flip")
    centre = [p.ood_score for p in outside]
    assert [p.ood_score for p in flipped] == pytest.approx(centre, abs=1e-6)

    result = evaluate_data(model, tiny_data, progress=False, n_boot=100, ood_data=foreign)
    assert result.ood is not None and result.ood.n_out == 4 and result.ood.n_in == len(inside)
    assert result.ood.auroc.value == 1.0 and result.ood.fpr_at_95_tpr.value == 0.0
    assert result.ood.out_flagged == 1.0 and result.ood.in_passed is not None
    assert result.ood.in_passed >= 0.8


def test_drop_label_issues_leaves_out_the_mislabelled_training_images(
    tiny_data: Path, shared_cache: Path, tmp_path: Path
) -> None:
    """Hats filed as shoes in train: ``data.drop_label_issues`` leaves them out of training,
    lists each in problems.csv with the suggested label, and counts them in run.json; the
    held-out split is never judged."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    moved = sorted((data / "train" / "hat").glob("*.jpg"))[:3]
    for photo in moved:
        photo.rename(data / "train" / "shoes" / photo.name)
    result = fit_run(data, tmp_path / "run", shared_cache, "data.drop_label_issues=true")
    assert isinstance(result, FitResult)
    with (tmp_path / "run" / "problems.csv").open(newline="") as fh:
        reasons = {Path(r["path"]).name: r["reason"] for r in csv.DictReader(fh)}
    caught = [p.name for p in moved if "label issue" in reasons.get(p.name, "")]
    assert len(caught) >= 2, reasons
    assert "suggest 'hat'" in reasons[caught[0]]
    assert result.label_issues_dropped == sum("label issue" in r for r in reasons.values())
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["label_issues_dropped"] == result.label_issues_dropped
    kept = {s.path.name for s in result.manifest.samples}
    assert not kept & set(caught)
    assert len(result.manifest.split("test")) == len(list((data / "test").rglob("*.jpg")))
