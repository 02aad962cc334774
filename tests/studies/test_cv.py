"""Cross-validation on cached embeddings: folds cover every CV image once, test stays aside,
groups never straddle train and test, summaries are right, and bad input is one line."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_CLASSES
from headstart.cli.main import main
from headstart.config import load_config
from headstart.errors import ConfigError
from headstart.studies.cv import Summary, cross_validate, fold_indices, write_cv

CLASSES = TINY_CLASSES


@pytest.fixture(scope="module")
def data(tiny_data: Path, shared_cache: Path) -> Iterator[Path]:
    """The session's four demo classes (train/validation/test); its cache is the default root
    for the module's tests."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(shared_cache))
        yield tiny_data


def test_stratified_cv_covers_train_val_once_and_keeps_test_aside(
    data: Path, tmp_path: Path
) -> None:
    result = cross_validate(data, load_config(), folds=3, progress=False)
    assert len(result.folds) == 3
    assert len(result.samples) == 4 * (20 + 6)  # train + validation; test kept aside
    assert all(result.manifest.samples[i].split != "test" for i in result.samples)
    assert sorted(set(result.fold_of[0].tolist())) == [0, 1, 2]
    assert not np.isnan(result.probabilities[0]).any()
    accuracies = [f.scores["accuracy"] for f in result.folds]
    s = result.summary["accuracy"]
    assert s.mean == pytest.approx(np.mean(accuracies)) and s.low <= s.mean <= s.high
    assert s.mean > 0.6  # the demo classes are easy; a broken fold mapping would be near 1/3
    out = write_cv(result, tmp_path / "out")
    with (out / "oof_predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 104 and not any(r["path"].startswith("test/") for r in rows)
    assert {"path", "label", "fold", "predicted", "p:hat"} <= set(rows[0])
    assert json.loads((out / "cv.json").read_text())["summary"]["accuracy"]["mean"] == s.mean


def test_repeats_reshuffle_and_groups_never_straddle_folds() -> None:
    labels = [c for c in "abc" for _ in range(12)]
    splits = fold_indices(labels, folds=3, repeats=2, seed=1)
    assert len(splits) == 6
    first = {tuple(sorted(te)) for r, _, _, te in splits if r == 0}
    second = {tuple(sorted(te)) for r, _, _, te in splits if r == 1}
    assert first != second
    groups = [f"g{i // 3}" for i in range(len(labels))]  # 12 groups of 3 images
    for _, _, train, test in fold_indices(labels, folds=3, groups=groups):
        assert not {groups[i] for i in train} & {groups[i] for i in test}


def test_group_column_from_csv(data: Path, tmp_path: Path) -> None:
    csv_path = tmp_path / "labels.csv"
    rows = [
        (p.as_posix(), p.parent.name, f"{p.parent.name}-{i % 4}")
        for cls in CLASSES
        for i, p in enumerate(sorted((data / "train" / cls).iterdir()))
    ]
    with csv_path.open("w", newline="") as fh:
        csv.writer(fh).writerows([("path", "label", "shoot"), *rows])
    cfg = load_config(overrides=["head.kind=knn", "data.test_fraction=0"])
    result = cross_validate(csv_path, cfg, folds=3, group_column="shoot", progress=False)
    shoot = {Path(p).resolve(): g for p, _, g in rows}
    for f in range(3):
        held = {
            shoot[result.manifest.samples[i].path]
            for i in np.array(result.samples)[result.fold_of[0] == f]
        }
        kept = {
            shoot[result.manifest.samples[i].path]
            for i in np.array(result.samples)[result.fold_of[0] != f]
        }
        assert not held & kept
    with pytest.raises(ConfigError, match=r"'nope'.*shoot"):
        cross_validate(csv_path, cfg, folds=3, group_column="nope", progress=False)


def test_summary_is_a_student_t_interval() -> None:
    s = Summary.of([0.8, 0.9, 1.0])
    assert s.mean == pytest.approx(0.9) and s.std == pytest.approx(0.1)
    assert s.high - s.mean == pytest.approx(4.302653 * 0.1 / np.sqrt(3), rel=1e-5)


def test_cli_cv_writes_outputs_and_rejects_bad_folds(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cvout"
    code = main(["cv", str(data), "--folds", "2", "--head", "knn", "-o", str(out), "-q"])
    text = capsys.readouterr().out
    assert code == 0 and "95% t-interval" in text and "test images kept aside" in text
    assert (out / "oof_predictions.csv").is_file()
    assert main(["cv", str(data), "--folds", "40", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--folds" in err and "Traceback" not in err
    assert main(["cv", str(data), "--group-column", "shoot", "-q"]) == 2
    assert "folder" in capsys.readouterr().err
