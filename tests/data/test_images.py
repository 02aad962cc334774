"""Safe decoding: probe reasons, load_rgb modes, EXIF orientation, draft mode, bytes input,
paths that are no image file, and the 8-bit scaling table."""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from headstart.data.images import (
    DEFAULT_MAX_PIXELS,
    GREY_RANGES,
    IMAGE_EXTENSIONS,
    STRETCH_FLOOR,
    load_rgb,
    probe_image,
)
from headstart.errors import ImageError
from salt import make_bad_files, make_image, png_with_size


def test_constants() -> None:
    assert DEFAULT_MAX_PIXELS == 89_478_485
    assert {".jpg", ".jpeg", ".png", ".webp", ".tiff"} <= IMAGE_EXTENSIONS


def test_probe_accepts_good_images(tmp_path: Path) -> None:
    for suffix in (".jpg", ".png", ".bmp", ".gif", ".webp", ".tif"):
        path = make_image(tmp_path / f"ok{suffix}")
        assert probe_image(path) is None, suffix
        assert probe_image(path.read_bytes()) is None, suffix
        assert load_rgb(path).size == (64, 48)


def test_every_bad_kind_has_its_reason(tmp_path: Path) -> None:
    expected = make_bad_files(tmp_path)
    assert len(expected) >= 5
    for name, reason in expected.items():
        path = tmp_path / name
        for source in (path, path.read_bytes(), io.BytesIO(path.read_bytes())):
            got = probe_image(source)
            assert got is not None and reason in got, (name, got)
        with pytest.raises(ImageError, match=re.escape(reason)):
            load_rgb(path)


def test_bomb_reason_names_size_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(png_with_size(30_000, 30_000))
    assert probe_image(path) == "decompression bomb: 30000x30000 px > limit 89,478,485 px"
    make_image(tmp_path / "small.png", (100, 100))
    assert "limit 5,000 px" in str(probe_image(tmp_path / "small.png", max_pixels=5_000))
    with pytest.raises(ImageError, match="decompression bomb"):
        load_rgb(tmp_path / "small.png", max_pixels=5_000)


def test_no_pillow_warning_escapes(tmp_path: Path) -> None:
    path = tmp_path / "warn.png"
    path.write_bytes(png_with_size(10_000, 10_000))  # between Pillow's warn and error limits
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "decompression bomb" in str(probe_image(io.BytesIO(path.read_bytes())))
        with pytest.raises(ImageError, match="decompression bomb"):
            load_rgb(path)


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    assert str(probe_image(tmp_path / "nope.jpg")).startswith("unreadable: ")


@pytest.mark.parametrize(
    ("mode", "color", "suffix", "expected"),
    [
        ("L", 100, ".png", (100, 100, 100)),
        ("LA", (100, 0), ".png", (255, 255, 255)),  # fully transparent -> white
        ("LA", (100, 255), ".png", (100, 100, 100)),
        ("RGBA", (10, 20, 30, 0), ".png", (255, 255, 255)),
        ("RGBA", (10, 20, 30, 255), ".png", (10, 20, 30)),
        ("CMYK", (0, 0, 0, 0), ".jpg", (255, 255, 255)),
        ("CMYK", (0, 0, 0, 255), ".jpg", (0, 0, 0)),
        ("I;16", 65535, ".png", (255, 255, 255)),
        ("I;16", 32896, ".png", (128, 128, 128)),
        ("I", 1000, ".tif", (4, 4, 4)),
        ("F", 0.5, ".tif", (128, 128, 128)),
        ("1", 1, ".png", (255, 255, 255)),
    ],
)
def test_modes_end_as_rgb(
    tmp_path: Path, mode: str, color: object, suffix: str, expected: tuple[int, int, int]
) -> None:
    path = make_image(tmp_path / f"img{suffix}", (8, 6), color, mode)  # type: ignore[arg-type]
    image = load_rgb(path)
    assert image.mode == "RGB" and image.size == (8, 6)
    got = np.asarray(image)[3, 4]
    assert np.abs(got.astype(int) - expected).max() <= 3, (mode, got)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 64 * 8).astype(np.uint16).reshape(8, 64)
    path = tmp_path / "ramp.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    out = np.asarray(load_rgb(path))[..., 0]
    assert out.min() == 0 and out.max() == 255
    assert 100 < out.mean() < 155  # a ramp, not a white sheet


def test_palette_transparency_composited_over_white(tmp_path: Path) -> None:
    image = Image.new("P", (4, 4), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    path = tmp_path / "p.gif"
    image.save(path, transparency=1)
    assert tuple(np.asarray(load_rgb(path))[0, 0]) == (255, 255, 255)
    opaque = tmp_path / "p.png"
    image.save(opaque)
    assert tuple(np.asarray(load_rgb(opaque))[0, 0]) == (255, 0, 0)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90° clockwise
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    out = load_rgb(path)
    assert out.size == (20, 40)
    top, bottom = np.asarray(out)[2, 10], np.asarray(out)[37, 10]
    assert top[0] > 200 and top[2] < 60  # red moved to the top
    assert bottom[2] > 200 and bottom[0] < 60


def test_draft_shrinks_large_jpeg_but_keeps_draft_size(tmp_path: Path) -> None:
    path = make_image(tmp_path / "big.jpg", (2000, 1500))
    out = load_rgb(path, draft_size=224)
    assert out.size == (500, 375)  # decoded at 1/4 scale: 1/8 would leave 188 < 224
    assert load_rgb(path, draft_size=150).size == (250, 188)  # 1/8


def test_draft_size_respected(tmp_path: Path) -> None:
    path = make_image(tmp_path / "big.jpg", (2000, 1500))
    for draft in (100, 224, 400, 1000, 5000):
        out = load_rgb(path, draft_size=draft)
        assert min(out.size) >= min(draft, 1500), (draft, out.size)
        assert min(out.size) < 2 * draft or out.size == (2000, 1500), (draft, out.size)
    assert load_rgb(make_image(tmp_path / "big.png", (300, 200)), draft_size=50).size == (300, 200)


def test_bytes_and_file_objects(tmp_path: Path) -> None:
    data = make_image(tmp_path / "x.jpg").read_bytes()
    assert load_rgb(data).size == (64, 48)
    assert load_rgb(io.BytesIO(data)).size == (64, 48)
    with pytest.raises(ImageError, match="not an image"):
        load_rgb(b"hello")


def test_bad_draft_size_is_a_config_error(tmp_path: Path) -> None:
    from headstart.errors import ConfigError

    with pytest.raises(ConfigError, match="draft_size"):
        load_rgb(make_image(tmp_path / "x.jpg"), draft_size=0)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (np.array([[0, 255]], np.int32), [0, 255]),  # 0..255: as they are
        (np.array([[0, 256, 65535]], np.int32), [0, 1, 255]),  # 0..65535: 16-bit full scale
        (np.array([[-2, 0, 2]], np.int32), [0, 128, 255]),  # neither: stretched
        (np.array([[0.0, 0.5, 1.0]], np.float32), [0, 128, 255]),  # 0..1
        (np.array([[0.0, 2.0, 255.0]], np.float32), [0, 2, 255]),  # 0..255
        (np.array([[-1.0, 1.0]], np.float32), [0, 255]),  # stretched
        (np.array([[7, 7]], np.int32), [7, 7]),
        (np.array([[-7.0, -7.0]], np.float32), [0, 0]),  # flat and negative: the floor
    ],
)
def test_grey_samples_scale_by_the_published_ranges(
    tmp_path: Path, values: np.ndarray, expected: list[int]
) -> None:
    assert GREY_RANGES["integer"][-1] == (0, 65535) and STRETCH_FLOOR["float"] == 1e-12
    path = tmp_path / "grey.tif"
    Image.fromarray(values).save(path)  # int32: mode I, float32: mode F
    assert np.asarray(load_rgb(path))[0, :, 0].tolist() == expected


def test_paths_that_are_no_image_file(tmp_path: Path) -> None:
    photo = make_image(tmp_path / "photo.png")
    (tmp_path / "photo.svg").write_bytes(photo.read_bytes())  # decodable, but not by its name
    os.mkfifo(tmp_path / "pipe.png")  # opening it to read would block
    reasons = {
        "photo.svg": "unsupported format (.svg): convert to JPEG/PNG",
        "pipe.png": "not a regular file (a pipe, socket or device)",
        "folder.png": "a folder, not an image file",
        "missing.png": "unreadable: No such file or directory",
    }
    (tmp_path / "folder.png").mkdir()
    for name, reason in reasons.items():
        assert probe_image(tmp_path / name) == reason, name
        with pytest.raises(ImageError, match=f"^{re.escape(reason)}$"):
            load_rgb(str(tmp_path / name))
