"""scan(): folders and CSVs into a Manifest, splits, problems, duplicates and user errors."""

from __future__ import annotations

import csv
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

import headstart
from conftest import TINY_CLASSES
from headstart.data import Manifest, Task, scan
from headstart.errors import ConfigError, DataError, PathNotFoundError
from salt import make_bad_files, make_dataset, make_image


def _counts(manifest: Manifest) -> Counter[tuple[str, str]]:
    return Counter((s.split, s.labels["label"][0]) for s in manifest.samples)


def _write_rows(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


def _write_csv(path: Path, text: str) -> Path:
    path.write_text(text.strip() + "\n", encoding="utf-8")
    return path


def test_random_split_is_stratified_and_seeded(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", {"cats": 20, "dogs": 10})
    m = scan(root, val_fraction=0.2, test_fraction=0.1)
    assert list(m.task().classes) == ["cats", "dogs"]
    assert m.split_source == "random stratified (val 20%, test 10%, seed 0)"
    counts = _counts(m)
    assert counts[("val", "cats")] == 4 and counts[("val", "dogs")] == 2
    assert counts[("test", "cats")] == 2 and counts[("test", "dogs")] == 1
    assert counts[("train", "cats")] == 14 and counts[("train", "dogs")] == 7
    again = scan(root, val_fraction=0.2, test_fraction=0.1)
    assert [(s.path, s.split) for s in again.samples] == [(s.path, s.split) for s in m.samples]
    other = scan(root, val_fraction=0.2, test_fraction=0.1, seed=1)
    assert {s.path: s.split for s in other.samples} != {s.path: s.split for s in m.samples}
    assert m.data_hash() == again.data_hash()


def test_samples_sorted_absolute_and_hashed(tmp_path: Path) -> None:
    m = scan(make_dataset(tmp_path / "d", {"a": 6, "b": 6}))
    keys = [
        (("train", "val", "test").index(s.split), s.labels["label"][0], str(s.path))
        for s in m.samples
    ]
    assert keys == sorted(keys)
    assert all(s.path.is_absolute() and len(s.sha256) == 64 for s in m.samples)
    assert m.root == (tmp_path / "d").resolve()


def test_tiny_classes_do_not_crash(tmp_path: Path) -> None:
    m = scan(make_dataset(tmp_path / "d", {"big": 10, "pair": 2, "one": 1}))
    counts = _counts(m)
    assert counts[("train", "pair")] == 1 and counts[("val", "pair")] == 1
    assert counts[("train", "one")] == 1
    assert list(m.task().classes) == ["big", "one", "pair"]


def test_split_folders_are_honoured_and_normalised(tmp_path: Path) -> None:
    make_dataset(tmp_path / "d" / "train", {"a": 4, "b": 4, "c": 2})
    make_dataset(tmp_path / "d" / "validation", {"a": 2, "b": 2})
    make_dataset(tmp_path / "d" / "test", {"a": 1, "b": 1})
    m = scan(tmp_path / "d")
    assert m.split_source == "folders"
    assert list(m.task().classes) == ["a", "b", "c"]
    assert m.splits_present() == ["train", "val", "test"]
    assert len(m.split("train")) == 10 and len(m.split("val")) == 4


def test_val_carved_from_train_when_missing(tmp_path: Path) -> None:
    make_dataset(tmp_path / "d" / "train", {"a": 20, "b": 20})
    make_dataset(tmp_path / "d" / "test", {"a": 3, "b": 3})
    m = scan(tmp_path / "d", val_fraction=0.25)
    assert m.split_source == "folders (val carved from train: 25%, seed 0)"
    counts = _counts(m)
    assert counts[("val", "a")] == 5 and counts[("train", "a")] == 15
    assert counts[("test", "b")] == 3


def test_nested_hidden_and_other_files(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", {"a": 2, "b": 2})
    make_image(root / "a" / "deeper" / "nested.jpg")
    make_image(root / "a" / ".hidden.jpg")
    make_image(root / "a" / ".cache" / "x.jpg")
    (root / "b" / "notes.txt").write_text("hi")
    (root / "b" / "UPPER.JPG").write_bytes((root / "a" / "deeper" / "nested.jpg").read_bytes())
    make_image(root / "stray.png")
    m = scan(root)
    names = sorted(s.path.name for s in m.samples)
    assert names == ["000.png", "000.png", "001.png", "001.png", "UPPER.JPG", "nested.jpg"]
    assert [(p.path.name, p.reason) for p in m.problems] == [
        ("stray.png", "not inside a class folder")
    ]


def test_bad_files_are_problems_and_scan_goes_on(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", {"a": 3, "b": 3})
    expected = make_bad_files(root / "a")
    m = scan(root)
    assert len(m.samples) == 6
    got = {p.path.name: p.reason for p in m.problems}
    assert set(got) == set(expected)
    for name, reason in expected.items():
        assert reason in got[name], (name, got[name])


def test_placeholder_picture_is_a_problem(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", {"a": 3, "b": 3})
    make_image(root / "a" / "imageNotFound.gif")
    m = scan(root)
    assert [p.path.name for p in m.problems] == ["imageNotFound.gif"]
    assert "placeholder" in m.problems[0].reason


def test_duplicates_within_and_across_splits(tmp_path: Path) -> None:
    make_dataset(tmp_path / "d" / "train", {"a": 3, "b": 3})
    make_dataset(tmp_path / "d" / "val", {"a": 1, "b": 1})
    d = tmp_path / "d"
    shutil.copy(d / "train" / "a" / "000.png", d / "train" / "a" / "copy.png")
    shutil.copy(d / "train" / "b" / "001.png", d / "val" / "b" / "leak.png")
    m = scan(d)
    groups = {tuple(p.name for p in g.paths): g for g in m.duplicates}
    assert set(groups) == {("000.png", "copy.png"), ("001.png", "leak.png")}
    assert not groups[("000.png", "copy.png")].cross_split
    assert groups[("001.png", "leak.png")].cross_split
    assert groups[("001.png", "leak.png")].splits == ("train", "val")
    assert len(m.samples) == 10  # duplicates are kept, only flagged


def test_random_split_keeps_duplicates_together(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "d", {"a": 12, "b": 12})
    for i in range(6):
        shutil.copy(root / "a" / f"{i:03d}.png", root / "a" / f"dup{i}.png")
    for seed in range(5):
        m = scan(root, seed=seed)
        assert len(m.duplicates) == 6
        assert not any(g.cross_split for g in m.duplicates)


def test_csv_with_split_column_and_multilabel(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "imgs", {"a": 3, "b": 3})
    absolute = make_image(tmp_path / "elsewhere" / "abs.png", color=(1, 2, 3))
    csv = _write_csv(
        tmp_path / "labels.csv",
        f"""
path,label,split,note
imgs/a/000.png,cat,train,x
imgs/a/001.png,cat|dog,train,
imgs/a/002.png, dog ,validation,
imgs/b/000.png,dog,Train,
imgs/b/001.png,cat,test,
imgs/b/002.png,dog,test,
{absolute},cat,val,
""",
    )
    del root
    m = scan(csv)
    assert m.split_source == "csv"
    assert list(m.task().classes) == ["cat", "dog"]
    assert m.root == tmp_path.resolve()
    by_name = {s.path.relative_to(tmp_path).as_posix(): s for s in m.samples}
    assert by_name["imgs/a/001.png"].labels["label"] == ("cat", "dog")
    assert by_name["imgs/a/002.png"].labels["label"] == ("dog",)
    assert by_name["imgs/a/002.png"].split == "val"
    assert by_name["imgs/b/000.png"].split == "train"
    assert by_name["elsewhere/abs.png"].split == "val"


def test_csv_label_column_and_random_split(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"a": 5, "b": 5})
    rows = [f"{c}/{i:03d}.png,{c.upper()}" for c in "ab" for i in range(5)]
    csv = _write_csv(tmp_path / "l.csv", "path,species\n" + "\n".join(rows))
    m = scan(csv, label_column="species", val_fraction=0.2, test_fraction=0.2)
    assert list(m.task().classes) == ["A", "B"]
    assert m.split_source.startswith("random stratified")
    assert Counter(s.split for s in m.samples) == {"train": 6, "val": 2, "test": 2}


def test_csv_errors(tmp_path: Path) -> None:
    make_dataset(tmp_path, {"a": 2, "b": 2})
    missing = _write_csv(tmp_path / "m.csv", "path,category\na/000.png,x")
    with pytest.raises(DataError, match=r"missing column\(s\) 'label'; found: 'path', 'category'"):
        scan(missing)
    bad = _write_csv(
        tmp_path / "labels.csv", "path,label\na/000.png,x\nno1.jpg,x\nno2.jpg,y\nno3.jpg,y"
    )
    with pytest.raises(
        DataError, match=re.escape("3 paths in labels.csv do not exist, e.g. 'no1.jpg'")
    ):
        scan(bad)
    empty = _write_csv(tmp_path / "e.csv", "path,label\na/000.png,x\na/001.png, | ")
    with pytest.raises(DataError, match=re.escape("line 3 of e.csv has an empty 'label'")):
        scan(empty)
    split = _write_csv(tmp_path / "s.csv", "path,label,split\na/000.png,x,holdout")
    with pytest.raises(DataError, match="split 'holdout'; valid: train"):
        scan(split)
    twice = _write_csv(tmp_path / "t.csv", "path,label\na/000.png,x\na/000.png,y")
    with pytest.raises(DataError, match="appears twice"):
        scan(twice)


def test_user_errors(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError, match="does not exist"):
        scan(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    make_image(tmp_path / "flat" / "x.png")
    with pytest.raises(DataError, match="no class sub-folders"):
        scan(tmp_path / "flat")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    with pytest.raises(DataError, match="no images found"):
        scan(tmp_path / "empty")
    one = make_dataset(tmp_path / "one", {"cats": 3})
    with pytest.raises(DataError, match=r"found only one class 'cats' in .*; need at least two"):
        scan(one)
    broken = make_dataset(tmp_path / "broken", {"a": 3})
    make_bad_files(broken / "b")
    with pytest.raises(DataError, match="every image of class 'b' is unusable"):
        scan(broken)
    with pytest.raises(DataError, match=re.escape("is a file")):
        scan(tmp_path / "flat" / "x.png")


@pytest.mark.parametrize(("val", "test"), [(-0.1, 0.1), (1.0, 0.0), (0.2, 1.5), (0.5, 0.5)])
def test_fractions_out_of_range(tmp_path: Path, val: float, test: float) -> None:
    with pytest.raises(ConfigError, match="fraction"):
        scan(tmp_path, val_fraction=val, test_fraction=test)


def test_real_data(shared_data: Path) -> None:
    hymenoptera = scan(shared_data / "hymenoptera")
    assert list(hymenoptera.task().classes) == ["ants", "bees"]
    assert hymenoptera.splits_present() == ["train", "val"]
    assert [p.path.name for p in hymenoptera.problems] == ["imageNotFound.gif"]
    digits = scan(shared_data / "sign_language_digits")
    assert list(digits.task().classes) == [str(i) for i in range(10)]
    assert digits.split_source.startswith("random stratified")
    assert digits.splits_present() == ["train", "val", "test"]
    assert not digits.problems
    scan(shared_data / "clothing_small")  # warm the OS cache
    start = time.perf_counter()
    clothing = scan(shared_data / "clothing_small")
    elapsed = time.perf_counter() - start
    assert len(clothing.task().classes) == 10 and clothing.splits_present() == [
        "train",
        "val",
        "test",
    ]
    assert elapsed < 3.0, f"rescan took {elapsed:.2f}s"  # ~0.4s on 2 idle cores


def test_scan_detects_multi_label_and_tasks(composites: Path) -> None:
    labels = scan(composites, label_column="items")
    assert labels.targets == (Task("label", TINY_CLASSES, multi_label=True),)
    assert all(len(s.labels["label"]) == 2 for s in labels.samples)
    both = scan(composites, label_column=["left", "items"])
    assert both.targets == (Task("left", TINY_CLASSES), Task("items", TINY_CLASSES, True))
    assert scan(composites, label_column="left").targets == (Task("label", TINY_CLASSES),)
    assert both.task("items").multi_label and both.task().name == "left"
    with pytest.raises(ConfigError, match="unknown task 'nope'; this model/data has: left, items"):
        both.task("nope")


def test_multi_label_cells_may_be_empty_but_multi_class_cells_may_not(tmp_path: Path) -> None:
    photos = sorted((Path(headstart.__file__).parent / "demo_data" / "train").rglob("*.jpg"))
    rows = [["path", "tags", "kind"]]
    tags = ["a|b", "", "a", "b", "a|b", "b"]
    for i, (photo, tag) in enumerate(zip(photos, tags, strict=False)):
        rows.append([str(photo), tag, "x" if i % 2 else "y"])
    data = _write_rows(tmp_path / "tags.csv", rows)
    manifest = scan(data, label_column=["tags", "kind"], val_fraction=0.0, test_fraction=0.0)
    assert [t.name for t in manifest.targets if t.multi_label] == ["tags"]
    assert sum(1 for s in manifest.samples if not s.labels["tags"]) == 1
    rows[3][2] = ""
    data = _write_rows(tmp_path / "tags2.csv", rows)
    with pytest.raises(DataError, match="empty 'kind'"):
        scan(data, label_column=["tags", "kind"])
