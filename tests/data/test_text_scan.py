"""Text data in: a CSV with a text column and class folders of .txt files become text manifests,
with the problems (empty text, undecodable bytes) and duplicates an image scan reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart.data import scan
from headstart.data.labelled import labelled_split, sample_inputs
from headstart.errors import DataError
from headstart.inputs import expand_texts

ROWS = [
    ("my card has not arrived yet", "card"),
    ("where is my new card", "card"),
    ("the card I ordered never came", "card"),
    ("how do I top up my account", "top_up"),
    ("can I add money with a bank transfer", "top_up"),
    ("top up failed twice today", "top_up"),
]


def _csv(path: Path, rows: list[tuple[str, str]], header: str = "text,category") -> Path:
    lines = [header] + [f'"{t}",{c}' for t, c in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_text_csv_is_a_text_manifest_with_the_text_hashed(tmp_path: Path) -> None:
    data = _csv(tmp_path / "q.csv", ROWS)
    m = scan(data, label_column="category", text_column="text", val_fraction=0, test_fraction=0)
    assert m.modality == "text"
    assert m.targets[0].classes == ("card", "top_up")
    assert sorted(m.texts) == sorted(t for t, _ in ROWS)
    first = next(s for s in m.samples if s.text == ROWS[0][0])
    assert first.path == tmp_path / "q.csv#2"  # the row's line in the file
    import hashlib

    assert first.sha256 == hashlib.sha256(ROWS[0][0].encode()).hexdigest()
    written = tmp_path / "manifest.csv"
    m.write_csv(written)
    assert written.read_text().splitlines()[0].endswith(",text")


def test_empty_and_undecodable_texts_are_problems_and_duplicates_are_found(
    tmp_path: Path,
) -> None:
    data = tmp_path / "q.csv"
    body = "text,category,split\n" + "".join(f'"{t}",{c},train\n' for t, c in ROWS)
    body += '"   ",card,train\n"where is my new card",card,test\n'
    data.write_bytes(body.encode() + b'"bad \xff byte",top_up,train\n')
    m = scan(data, label_column="category", text_column="text")
    reasons = {p.path.name: p.reason for p in m.problems}
    assert reasons == {
        "q.csv#8": "empty text",
        "q.csv#10": "undecodable bytes (not UTF-8 text)",
    }
    (group,) = m.duplicates
    assert group.cross_split and "test" in group.splits  # the other copy: train or its carved val


def test_a_missing_text_column_is_one_line(tmp_path: Path) -> None:
    data = _csv(tmp_path / "q.csv", ROWS)
    with pytest.raises(DataError, match=r"missing column.*'body'"):
        scan(data, label_column="category", text_column="body")


def test_class_folders_of_txt_files_are_text_data(tmp_path: Path) -> None:
    for i, (text, label) in enumerate(ROWS):
        folder = tmp_path / "d" / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.txt").write_text(text + "\n", encoding="utf-8")
    (tmp_path / "d" / "card" / "blank.txt").write_text("\n \n")
    (tmp_path / "d" / "top_up" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    m = scan(tmp_path / "d", val_fraction=0, test_fraction=0)
    assert m.modality == "text" and len(m.samples) == len(ROWS)
    assert {s.text for s in m.samples} == {t for t, _ in ROWS}
    assert {p.path.name: p.reason for p in m.problems} == {
        "blank.txt": "empty text",
        "latin1.txt": "undecodable bytes (not UTF-8 text)",
    }


def test_text_files_beside_images_leave_an_image_data_set_alone(tmp_path: Path) -> None:
    from salt import make_image

    for label in ("a", "b"):
        folder = tmp_path / label
        folder.mkdir()
        for i in range(2):
            make_image(folder / f"{i}.png")
        (folder / "notes.txt").write_text("not a sample")
    m = scan(tmp_path, val_fraction=0, test_fraction=0)
    assert m.modality == "image" and len(m.samples) == 4
    assert all(s.text is None for s in m.samples)


def test_a_test_csv_gives_the_texts_a_model_reads(tmp_path: Path) -> None:
    from headstart.data import Task

    data = _csv(tmp_path / "test.csv", ROWS)
    task = Task("label", ("card", "top_up"))
    _, split, samples = labelled_split(data, [task], label_column="category", text_column="text")
    assert split == "train" and sample_inputs(samples) == [s.text for s in samples]


def test_predict_inputs_are_texts_txt_files_and_csv_rows(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("  where is my card \n")
    data = _csv(tmp_path / "q.csv", ROWS[:2])
    rows = expand_texts([str(tmp_path / "one.txt"), str(data), "top up please", " ", ""])
    assert [(src.name, text, why) for src, text, why in rows] == [
        ("one.txt", "where is my card", None),
        ("q.csv#2", ROWS[0][0], None),
        ("q.csv#3", ROWS[1][0], None),
        ("text 3", "top up please", None),
        ("text 4", "", "empty text"),
        ("text 5", "", "empty text"),
    ]
    with pytest.raises(DataError, match="no text column 'body'"):
        expand_texts([str(data)], text_column="body")
