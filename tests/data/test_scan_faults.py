"""scan() on folders it cannot fully read: permissions, symlinks, formats Pillow cannot decode.

Every path not read is a Problem with its reason; a split or class folder lost that way is a
DataError (exit 2), never a class that silently vanishes or a traceback.  Permission errors are
simulated by making ``os.scandir`` / ``Path.read_bytes`` raise for chosen paths, so the tests
run as root too (where chmod 000 stops nothing); one real chmod test skips under root.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import features

from headstart.data import Manifest, scan
from headstart.data.images import IMAGE_EXTENSIONS, load_rgb
from headstart.errors import DataError, PathNotFoundError
from headstart.inputs import expand_inputs
from salt import Deny, copy_demo, make_dataset, make_image


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """train/ and val/ with classes a and b (real PNGs); resolved, as the scan's paths are.

    It lies one level down (``set/d``), so ``tmp_path/outside`` is outside ``d``'s parent."""
    root = tmp_path.resolve() / "set" / "d"
    make_dataset(root / "train", {"a": 4, "b": 4})
    make_dataset(root / "val", {"a": 2, "b": 2})
    return root


@pytest.fixture()
def deny_file(monkeypatch: pytest.MonkeyPatch) -> Deny:
    """Make reading the given files fail with EACCES."""
    denied: set[Path] = set()
    real = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self in denied:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    return denied.add


def _problems(manifest: Manifest) -> dict[str, str]:
    return {p.path.relative_to(manifest.root).as_posix(): p.reason for p in manifest.problems}


def _support(manifest: Manifest) -> Counter[tuple[str, str]]:
    return Counter((s.split, s.labels["label"][0]) for s in manifest.samples)


# ---------------------------------------------------------------- permissions


@pytest.mark.parametrize("split", ["train", "val"])
def test_unreadable_class_folder_is_an_error(data: Path, deny_folder: Deny, split: str) -> None:
    deny_folder(data / split / "b")
    with pytest.raises(DataError) as error:
        scan(data)
    assert str(error.value) == (
        f"cannot use class folder '{split}/b': unreadable folder: Permission denied; "
        "fix or remove it"
    )


def test_unreadable_class_folder_without_splits(tmp_path: Path, deny_folder: Deny) -> None:
    root = make_dataset(tmp_path.resolve() / "d", {"a": 3, "b": 3, "c": 3})
    deny_folder(root / "c")
    with pytest.raises(DataError, match="cannot use class folder 'c': unreadable folder"):
        scan(root)


def test_unreadable_subfolder_is_a_problem(data: Path, deny_folder: Deny) -> None:
    make_image(data / "train" / "a" / "more" / "x.png", color=(9, 9, 9))
    deny_folder(data / "train" / "a" / "more")
    m = scan(data)
    assert _problems(m) == {"train/a/more": "unreadable folder: Permission denied"}
    assert _support(m)[("train", "a")] == 4


def test_class_folder_left_with_only_an_unreadable_subfolder(
    tmp_path: Path, deny_folder: Deny
) -> None:
    root = make_dataset(tmp_path.resolve() / "d", {"a": 3})
    make_image(root / "b" / "sub" / "x.png")
    deny_folder(root / "b" / "sub")
    with pytest.raises(DataError, match="class folder 'b' has no usable image: 'b/sub': unread"):
        scan(root)


def test_unreadable_file_is_a_problem_and_a_lost_class_an_error(
    data: Path, deny_file: Deny
) -> None:
    deny_file(data / "train" / "a" / "000.png")
    m = scan(data)
    assert _problems(m) == {"train/a/000.png": "unreadable: Permission denied"}
    for name in ("000.png", "001.png"):
        deny_file(data / "val" / "b" / name)
    with pytest.raises(
        DataError,
        match=r"class folder 'val/b' has no usable image: 'val/b/000.png': unreadable: "
        r"Permission denied \(and 1 more\)",
    ):
        scan(data)


def test_unreadable_split_and_data_folder(data: Path, deny_folder: Deny) -> None:
    deny_folder(data / "val")
    with pytest.raises(DataError, match=r"cannot use split folder 'val' of .*: unreadable folder"):
        scan(data)
    deny_folder(data)
    with pytest.raises(DataError, match=r"cannot read the data folder .*: unreadable folder"):
        scan(data)


def test_other_os_errors_are_problems_not_tracebacks(
    data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_image(data / "train" / "a" / "disk" / "x.png")
    real = os.scandir
    bad = str(data / "train" / "a" / "disk")

    def scandir(path: str | os.PathLike[str] = ".") -> Iterator[os.DirEntry[str]]:
        if os.fspath(path) == bad:
            raise OSError(errno.EIO, "Input/output error", bad)
        return real(path)  # type: ignore[return-value]

    monkeypatch.setattr(os, "scandir", scandir)
    assert _problems(scan(data)) == {"train/a/disk": "unreadable folder: Input/output error"}


def _chmod_stops_reads(folder: Path) -> bool:
    """Whether mode 000 stops this process (not so for root, or with CAP_DAC_OVERRIDE)."""
    probe = folder / "probe"
    probe.write_bytes(b"x")
    probe.chmod(0)
    try:
        probe.read_bytes()
    except PermissionError:
        return True
    else:
        return False
    finally:
        probe.unlink()


def test_real_chmod_000(data: Path, tmp_path: Path) -> None:
    if not _chmod_stops_reads(tmp_path):
        pytest.skip("chmod 000 does not stop this user (root): the monkeypatched tests cover it")
    folder = data / "train" / "b"
    folder.chmod(0)
    try:
        with pytest.raises(DataError, match=r"'train/b'.*Permission denied"):
            scan(data)
    finally:
        folder.chmod(0o755)
    image = data / "train" / "a" / "000.png"
    image.chmod(0)
    try:
        assert _problems(scan(data)) == {"train/a/000.png": "unreadable: Permission denied"}
    finally:
        image.chmod(0o644)


def test_unreadable_csv_and_data_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n", encoding="utf-8")
    real_open = Path.open

    def deny_open(self: Path, *args: object, **kwargs: object) -> object:
        if self == labels.resolve():
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Path, "open", deny_open)
    with pytest.raises(DataError, match=r"cannot read .*labels\.csv: Permission denied"):
        scan(labels)
    monkeypatch.undo()
    labels.write_bytes("path,label\nb\xe9.png,x\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"labels\.csv is not UTF-8 text"):
        scan(labels)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises((DataError, PathNotFoundError)):
        scan(loop)


# ---------------------------------------------------------------- symlinks


def test_class_level_symlink_loop_is_an_error(data: Path) -> None:
    (data / "train" / "x").symlink_to("x")
    with pytest.raises(DataError, match="cannot use class folder 'train/x': symlink loop: not"):
        scan(data)


def test_class_level_symlink_to_its_split_is_an_error(data: Path) -> None:
    (data / "train" / "x").symlink_to(".")
    with pytest.raises(
        DataError,
        match="cannot use class folder 'train/x': symlink to 'train', a folder containing it",
    ):
        scan(data)


def test_class_level_symlink_to_another_split_class_is_an_error(data: Path) -> None:
    shutil.rmtree(data / "val" / "a")
    (data / "val" / "a").symlink_to(data / "train" / "a")  # the leak it would be
    with pytest.raises(
        DataError, match="cannot use class folder 'val/a': symlink to 'train/a', already scanned"
    ):
        scan(data)


def test_broken_class_level_symlink_is_an_error(data: Path) -> None:
    (data / "train" / "c").symlink_to(data.parent / "unmounted" / "c")
    with pytest.raises(DataError, match=r"cannot use class folder 'train/c': broken symlink to"):
        scan(data)


def test_symlinks_from_elsewhere_are_followed(data: Path, tmp_path: Path) -> None:
    outside = make_dataset(tmp_path.resolve() / "outside", {"c": 3, "more": 2})
    (data / "train" / "c").symlink_to(outside / "c")  # a class folder linked in
    (data / "train" / "a" / "more").symlink_to(outside / "more")  # a sub-folder linked in
    (data / "train" / "b" / "one.png").symlink_to(outside / "c" / "000.png")  # a file
    make_dataset(data / "val", {"c": 1})
    m = scan(data)
    assert not m.problems
    assert list(m.task().classes) == ["a", "b", "c"]
    support = _support(m)
    assert support[("train", "c")] == 3 and support[("train", "a")] == 6
    assert support[("train", "b")] == 5
    linked = data / "train" / "a" / "more" / "000.png"
    assert linked in {s.path for s in m.samples}  # the path as the data set shows it
    assert any(data / "train" / "b" / "one.png" in g.paths for g in m.duplicates)


def test_symlinks_not_followed_inside_a_class_are_problems(data: Path, tmp_path: Path) -> None:
    a = data / "train" / "a"
    (a / "loop").symlink_to("loop")
    (a / "up").symlink_to("..")
    (a / "root").symlink_to(data)
    (a / "b_again").symlink_to("../b")  # sorts before b: the real folder still wins
    (a / "gone.jpg").symlink_to("nowhere.jpg")
    (a / "gone").symlink_to(tmp_path / "nowhere")
    outside = make_dataset(tmp_path.resolve() / "outside", {"x": 2})
    (a / "ext1").symlink_to(outside / "x")
    (a / "ext2").symlink_to(outside / "x")
    (outside / "x" / "up").symlink_to(data.parent)  # contains the data set, not the link
    m = scan(data)
    assert _problems(m) == {
        "train/a/b_again": "symlink to 'train/b', already scanned: not followed",
        "train/a/ext1/up": f"symlink to '{data.parent}', a folder containing the data set: "
        "not followed",
        "train/a/ext2": "symlink to 'train/a/ext1', already scanned: not followed",
        "train/a/gone": f"broken symlink to '{tmp_path / 'nowhere'}': not followed",
        "train/a/gone.jpg": "broken symlink to 'nowhere.jpg': not followed",
        "train/a/loop": "symlink loop: not followed",
        "train/a/root": "symlink to '.', a folder containing it: not followed",
        "train/a/up": "symlink to 'train', a folder containing it: not followed",
    }
    support = _support(m)
    assert support[("train", "a")] == 4 + 2 and support[("train", "b")] == 4
    assert not m.duplicates


def test_split_level_symlink_loop_is_an_error(data: Path) -> None:
    shutil.rmtree(data / "val")
    (data / "val").symlink_to("val")
    with pytest.raises(DataError, match=r"cannot use split folder 'val' of .*: symlink loop"):
        scan(data)


def test_broken_link_beside_split_folders_is_a_problem(data: Path) -> None:
    (data / "old").symlink_to(data / "gone")
    m = scan(data)
    assert _problems(m) == {"old": f"broken symlink to '{data / 'gone'}': not followed"}


def test_image_named_pipe_is_a_problem_not_a_hang(data: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes on this platform")
    os.mkfifo(data / "train" / "a" / "pipe.jpg")
    assert _problems(scan(data)) == {
        "train/a/pipe.jpg": "not a regular file (a pipe, socket or device)"
    }


# ---------------------------------------------------------------- formats


def test_formats_pillow_cannot_decode_are_listed(data: Path) -> None:
    a = data / "train" / "a"
    (a / "raw.cr2").write_bytes(b"II*\x00 not really")
    (a / "logo.svg").write_text("<svg/>", encoding="utf-8")
    (a / "notes.txt").write_text("not an image, not a problem", encoding="utf-8")
    expected = {
        "train/a/logo.svg": "unsupported format (.svg): convert to JPEG/PNG",
        "train/a/raw.cr2": "unsupported format (.cr2): convert to JPEG/PNG",
    }
    if ".heic" not in IMAGE_EXTENSIONS:
        (a / "phone.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")
        expected["train/a/phone.HEIC"] = (
            "unsupported format (.heic): install pillow-heif, or convert to JPEG/PNG"
        )
    assert _problems(scan(data)) == expected


def test_class_folder_of_unsupported_files_is_an_error(data: Path) -> None:
    shutil.rmtree(data / "val" / "b")
    (data / "val" / "b").mkdir()
    (data / "val" / "b" / "scan.dng").write_bytes(b"II*\x00")
    with pytest.raises(
        DataError, match=r"class folder 'val/b' has no usable image: 'val/b/scan.dng': unsupp"
    ):
        scan(data)


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF support")
def test_avif_is_taken_like_predict_takes_it(tmp_path: Path) -> None:
    root = copy_demo(tmp_path.resolve() / "d", ["hat", "shoes"], {"train": 3})
    for cls in ("hat", "shoes"):
        photo = sorted((root / "train" / cls).iterdir())[0]
        load_rgb(photo).save(root / "train" / cls / "photo.avif")
    m = scan(root, val_fraction=0.0)
    assert not m.problems
    avifs = [s.path for s in m.samples if s.path.suffix == ".avif"]
    assert len(avifs) == 2 and load_rgb(avifs[0]).size[0] > 0
    assert set(avifs) <= set(expand_inputs([root]))  # predict DIR finds the same files


def test_csv_row_of_an_unsupported_format(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "imgs", {"a": 2, "b": 2})
    (root / "a" / "x.cr2").write_bytes(b"II*\x00 raw")
    rows = [f"imgs/{c}/{i:03d}.png,{c}" for c in "ab" for i in range(2)]
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "\n".join([*rows, "imgs/a/x.cr2,a"]) + "\n")
    m = scan(labels, val_fraction=0.0, test_fraction=0.0)
    assert _problems(m) == {"imgs/a/x.cr2": "unsupported format (.cr2): convert to JPEG/PNG"}
