"""``expand_inputs`` (what ``headstart predict FILES/FOLDERS/GLOBS`` reads): folders are read by
the data scan's walk (same image names, hidden names, symlink policy), and what it could not
read below a folder (an unsupported format, an unreadable sub-folder, a broken link) is listed
so that decoding gives it an error row with its reason, rather than the path vanishing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from headstart.backbones.preprocessing import Preprocessing
from headstart.data.images import IMAGE_EXTENSIONS, decode_each, load_rgb
from headstart.errors import ImageError, PathNotFoundError
from headstart.export.images import check_images
from headstart.inputs import expand_inputs
from salt import Deny, copy_demo


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    """Real demo photos in ``photos/train/<class>/`` (two classes, two each); resolved."""
    return copy_demo(tmp_path.resolve() / "photos", ["hat", "shoes"], {"train": 2})


def _jpegs(root: Path) -> list[Path]:
    return sorted(root.rglob("*.jpg"))


def _reasons(paths: list[Path]) -> dict[str, str]:
    """{name: reason} of the paths the loader's decoder refuses (as predict's error rows)."""
    _, _, failed = decode_each(paths, lambda image: np.zeros(1), (1,), None)
    return {paths[i].name: why for i, why in failed.items()}


def test_a_folder_lists_its_images_as_the_scan_does(photos: Path) -> None:
    images = _jpegs(photos)
    hat = photos / "train" / "hat"
    (hat / ".thumb.jpg").write_bytes(images[0].read_bytes())  # hidden file
    (photos / "__MACOSX").mkdir()  # hidden folder
    (photos / "__MACOSX" / "copy.jpg").write_bytes(images[0].read_bytes())
    (hat / "notes.txt").write_text("not an image, not a problem", encoding="utf-8")
    (hat / "upper.JPG").write_bytes(images[0].read_bytes())
    got = expand_inputs([photos])
    assert got == sorted([*images, hat / "upper.JPG"])
    assert not _reasons(got)


def test_unsupported_formats_get_an_error_row(photos: Path) -> None:
    hat = photos / "train" / "hat"
    (hat / "logo.svg").write_text("<svg/>", encoding="utf-8")
    (hat / "raw.cr2").write_bytes(b"II*\x00 not really")
    expected = {
        "logo.svg": "unsupported format (.svg): convert to JPEG/PNG",
        "raw.cr2": "unsupported format (.cr2): convert to JPEG/PNG",
    }
    if ".heic" not in IMAGE_EXTENSIONS:
        (hat / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
        expected["phone.HEIC"] = (
            "unsupported format (.heic): install pillow-heif, or convert to JPEG/PNG"
        )
    got = expand_inputs([photos])
    assert got == sorted([*_jpegs(photos), *(hat / name for name in expected)])
    assert _reasons(got) == expected
    # given by name, the file gets the same reason (it used to be "not an image")
    with pytest.raises(ImageError, match=r"^unsupported format \(\.svg\)"):
        load_rgb(expand_inputs([hat / "logo.svg"])[0])


def test_an_unreadable_sub_folder_gets_an_error_row(photos: Path, deny_folder: Deny) -> None:
    shoes = photos / "train" / "shoes"
    deny_folder(shoes)
    got = expand_inputs([photos])
    assert got == sorted([*_jpegs(photos / "train" / "hat"), shoes])
    assert _reasons(got) == {"shoes": "unreadable folder: Permission denied"}


def test_an_unreadable_folder_given_is_one_error_row(photos: Path, deny_folder: Deny) -> None:
    deny_folder(photos)
    got = expand_inputs([photos])
    assert got == [photos]
    assert _reasons(got) == {"photos": "unreadable folder: Permission denied"}


def test_links(photos: Path, tmp_path: Path) -> None:
    hat = photos / "train" / "hat"
    elsewhere = copy_demo(tmp_path.resolve() / "more", ["pants"], {"test": 1})
    images = [*_jpegs(photos), *_jpegs(elsewhere)]
    (hat / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")  # broken: a row under its own name
    (photos / "again").symlink_to(photos / "train")  # a folder read already: no row, no repeat
    (photos / "more").symlink_to(elsewhere)  # a folder outside: followed
    got = expand_inputs([photos])
    assert got == sorted([*images, hat / "gone.jpg"])
    assert _reasons(got) == {"gone.jpg": "unreadable: No such file or directory"}


def test_a_pipe_named_like_an_image_is_left_out(photos: Path) -> None:
    images = _jpegs(photos)
    os.mkfifo(photos / "train" / "hat" / "stream.jpg")  # reading it would block
    assert expand_inputs([photos]) == images
    with pytest.raises(ImageError, match="not a regular file"):
        load_rgb(photos / "train" / "hat" / "stream.jpg")


def test_files_and_globs(photos: Path) -> None:
    images = _jpegs(photos)
    (photos / "notes.txt").write_text("given by name: an error row", encoding="utf-8")
    got = expand_inputs([images[1], photos / "notes.txt", f"{photos}/train/*", images[0]])
    assert got == [images[1], photos / "notes.txt", images[0], *images[2:]]
    assert _reasons(got) == {"notes.txt": "not an image (cannot identify format)"}
    with pytest.raises(PathNotFoundError, match="no file matches"):
        expand_inputs([f"{photos}/*.png"])
    with pytest.raises(PathNotFoundError, match="no such file or folder"):
        expand_inputs([photos / "missing.jpg"])


def test_export_check_images_report_what_predict_would(photos: Path, deny_folder: Deny) -> None:
    """A caller of expand_inputs: the export's check images name each skipped path."""
    (photos / "train" / "hat" / "logo.svg").write_text("<svg/>", encoding="utf-8")
    deny_folder(photos / "train" / "shoes")
    prep = Preprocessing(resize=40, crop=32, mean=(0.5,) * 3, std=(0.25,) * 3)
    checked = check_images(photos, prep)
    assert checked.paths == _jpegs(photos / "train" / "hat")
    assert checked.batch.shape == (2, 3, 32, 32)
    assert checked.skipped == {
        photos / "train" / "hat" / "logo.svg": "unsupported format (.svg): convert to JPEG/PNG",
        photos / "train" / "shoes": "unreadable folder: Permission denied",
    }
