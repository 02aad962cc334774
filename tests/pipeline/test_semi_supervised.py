"""``fit --unlabelled``: real photos of the tiny demo data with four labels per class and the
rest of their training photos unlabelled, from the CLI and the library; bad input is one line
and loses nothing already written."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

import headstart
from conftest import TINY_CLASSES, fit_run
from headstart.cli.main import main
from headstart.errors import ConfigError, DataError, PathNotFoundError
from salt import make_bad_files
from texts import write_text_csv

LABELLED_PER_CLASS = 4


@pytest.fixture(scope="module")
def few_labels(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """``(labelled, unlabelled)``: train/ with four photos per class and the tiny data's test/;
    a folder of the other training photos, plus one labelled photo and bad files in bad/."""
    root = tmp_path_factory.mktemp("few-labels")
    labelled, unlabelled = root / "labelled", root / "unlabelled"
    unlabelled.mkdir()
    for cls in TINY_CLASSES:
        photos = sorted((tiny_data / "train" / cls).iterdir())
        (labelled / "train" / cls).mkdir(parents=True)
        for f in photos[:LABELLED_PER_CLASS]:
            shutil.copy(f, labelled / "train" / cls / f.name)
        for f in photos[LABELLED_PER_CLASS:]:
            shutil.copy(f, unlabelled / f"{cls}-{f.name}")
        shutil.copytree(tiny_data / "test" / cls, labelled / "test" / cls)
    first = sorted((labelled / "train" / TINY_CLASSES[0]).iterdir())[0]
    shutil.copy(first, unlabelled / "copy-of-a-labelled-photo.jpg")
    make_bad_files(unlabelled / "bad")
    return labelled, unlabelled


def _flags(cache: Path) -> list[str]:
    return ["--set", f"extract.cache_dir={cache}", "--set", "eval.n_boot=50", "-q"]


def test_cli_fit_learns_from_unlabelled_photos(
    few_labels: tuple[Path, Path],
    shared_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    labelled, unlabelled = few_labels
    out = tmp_path / "run"
    argv = ["fit", str(labelled), "-o", str(out), "--unlabelled", str(unlabelled)]
    assert main([*argv, *_flags(shared_cache)]) == 0
    said = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "Unlabelled: " in said and "1 also labelled" in said and "5 unusable" in said
    assert "pseudo-labels used" in said
    record = json.loads((out / "run.json").read_text())["semi_supervised"]
    photos = [p for p in unlabelled.iterdir() if p.name.startswith(TINY_CLASSES)]
    assert record["images"] == len(photos)
    assert record["left_out_labelled"] == 1 and record["left_out_unusable"] == 5
    assert record["source"] == str(unlabelled.resolve())
    task = record["tasks"]["label"]
    assert task["chosen"] in ("none", "self_training", "label_spreading")
    assert [c["method"] for c in task["candidates"]] == ["none", "self_training", "label_spreading"]
    assert all(0.0 <= c["cv_accuracy"] <= 1.0 for c in task["candidates"])
    assert task["pseudo_labels"] == sum(task["pseudo_labels_per_class"].values())
    if task["chosen"] == "none":
        assert task["pseudo_labels"] == 0
    # the bundle is an ordinary one: it loads, predicts, and carries the record
    model = headstart.load(out / "model")
    photo = sorted((labelled / "test" / "hat").iterdir())[0]
    (prediction,) = model.predict([photo])
    assert prediction.top[0][0] in TINY_CLASSES
    info = json.loads((out / "model" / "model.json").read_text())
    assert info["run"]["semi_supervised"]["tasks"]["label"]["chosen"] == task["chosen"]
    assert f"unlabelled: {unlabelled.resolve()}" in (out / "config.yaml").read_text()
    page = (out / "report.html").read_text()
    assert "Semi-supervised head" in page and "label_spreading" in page


def test_library_fit_takes_a_csv_of_paths(
    few_labels: tuple[Path, Path], shared_cache: Path, tmp_path: Path
) -> None:
    labelled, unlabelled = few_labels
    listing = tmp_path / "more.csv"
    photos = sorted(p for p in unlabelled.iterdir() if p.name.startswith("t-shirt"))
    with listing.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "note"])
        writer.writerows([[os.path.relpath(p, tmp_path), "x"] for p in photos])
        writer.writerow([str(photos[0]), "the same photo twice"])
    result = fit_run(labelled, tmp_path / "run", shared_cache, report=False, unlabelled=listing)
    record = result.semi_supervised  # type: ignore[attr-defined]
    assert record["images"] == len(photos) and record["left_out_repeats"] == 1
    assert record["source"] == str(listing.resolve())
    assert "embed_unlabelled" in result.timings  # type: ignore[attr-defined]
    # labelled-only runs carry no record
    plain = fit_run(labelled, tmp_path / "plain", shared_cache, report=False)
    assert plain.semi_supervised is None  # type: ignore[attr-defined]
    assert "semi_supervised" not in json.loads((tmp_path / "plain" / "run.json").read_text())


def test_bad_unlabelled_input_is_one_line_and_loses_nothing(
    few_labels: tuple[Path, Path],
    composites: Path,
    shared_cache: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    labelled, unlabelled = few_labels
    out = tmp_path / "run"
    fit_run(labelled, out, shared_cache, report=False)
    model_json = (out / "model" / "model.json").read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    base = ["fit", str(labelled), "-o", str(out), "--overwrite", *_flags(shared_cache)]
    cases = [
        (["--unlabelled", str(tmp_path / "nope")], "no such file or folder"),
        (["--unlabelled", str(empty)], "no usable unlabelled image"),
        (["--unlabelled", str(unlabelled), "--strategy", "finetune"], "works with the probe"),
        (["--unlabelled", str(unlabelled), "--preset", "balanced"], "works with the probe"),
        (["--unlabelled", str(labelled / "train" / "hat")], "no usable unlabelled image"),
    ]
    for extra, needle in cases:
        assert main([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
        assert (out / "model" / "model.json").read_bytes() == model_json  # nothing lost
    with pytest.raises(ConfigError, match="label is multi-label"):
        fit_run(
            composites, tmp_path / "ml", shared_cache, "data.label_column=items",
            report=False, unlabelled=unlabelled,
        )  # fmt: skip
    texts = write_text_csv(tmp_path / "texts.csv")
    with pytest.raises(ConfigError, match="takes images"):
        fit_run(
            texts, tmp_path / "text", shared_cache, "data.text_column=text",
            "data.label_column=category", report=False, unlabelled=unlabelled,
        )  # fmt: skip
    with pytest.raises(PathNotFoundError):
        fit_run(labelled, tmp_path / "x", shared_cache, unlabelled=tmp_path / "nope")
    listing = tmp_path / "bad.csv"
    listing.write_text("file\na.jpg\n")
    with pytest.raises(DataError, match="no 'path' column"):
        fit_run(labelled, tmp_path / "y", shared_cache, report=False, unlabelled=listing)


def test_unlabelled_images_unlike_the_training_ones_get_no_pseudo_label(
    few_labels: tuple[Path, Path], shared_cache: Path, tmp_path: Path
) -> None:
    """Noise images are out of distribution for photos of clothes: the precision calibrated on
    labelled photos says nothing about them, so the OOD scorer keeps them out of the pool."""
    import numpy as np
    from PIL import Image

    labelled, _ = few_labels
    noise = tmp_path / "noise"
    noise.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        pixels = rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(noise / f"noise-{i}.png")
    out = tmp_path / "run"
    fit_run(labelled, out, shared_cache, f"data.unlabelled={noise}", report=False)
    record = json.loads((out / "run.json").read_text())["semi_supervised"]
    assert record["images"] == 8 and record["left_out_unlike"] >= 6
    assert record["tasks"]["label"]["pseudo_labels"] <= 8 - record["left_out_unlike"]
