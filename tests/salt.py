"""Test helpers: tiny real images and one file of every kind of bad image ("salt" for a data set).

Import from tests as ``from salt import make_bad_files, make_image`` (tests/ is on sys.path).
"""

from __future__ import annotations

import io
import random
import shutil
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from PIL import Image, PngImagePlugin

__all__ = ["BAD_KINDS", "Deny", "make_bad_files", "make_dataset", "make_image", "png_with_size"]

Deny = Callable[[Path], None]
"""The ``deny_folder`` fixture (tests/conftest.py): makes listing a folder fail."""

# filename -> substring of the reason probe_image / scan gives for it
BAD_KINDS: dict[str, str] = {
    "truncated.jpg": "truncated or corrupt image data",
    "garbage.jpg": "not an image",
    "empty.jpg": "empty file (0 bytes)",
    "text.png": "not an image",
    "bomb.png": "decompression bomb",
}

_DEFAULT_COLORS: dict[str, float | tuple[int, ...]] = {
    "1": 1,
    "L": 128,
    "LA": (128, 200),
    "P": 3,
    "RGB": (200, 30, 30),
    "RGBA": (200, 30, 30, 255),
    "CMYK": (0, 200, 200, 0),
    "I;16": 40000,
    "I": 40000,
    "F": 0.5,
}


def make_image(
    path: Path,
    size: tuple[int, int] = (64, 48),
    color: int | float | tuple[int, ...] | None = None,
    mode: str = "RGB",
    *,
    note: str | None = None,
) -> Path:
    """Write a small solid-colour image; the format follows the suffix (.jpg, .png, ...).

    ``note`` is embedded as a PNG text chunk or JPEG comment, so equal pixels need not mean
    equal bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fill = _DEFAULT_COLORS.get(mode, 0) if color is None else color
    image = Image.new(mode, size, fill)
    if mode == "P":
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (i * 7) % 256)])
    suffix = path.suffix.lower()
    if note is not None and suffix == ".png":
        info = PngImagePlugin.PngInfo()
        info.add_text("note", note)
        image.save(path, pnginfo=info)
    elif note is not None and suffix in (".jpg", ".jpeg"):
        image.save(path, comment=note.encode())
    else:
        image.save(path)
    return path


def make_dataset(
    root: Path, counts: dict[str, int], size: tuple[int, int] = (16, 12), suffix: str = ".png"
) -> Path:
    """Write ``root/<class>/<i><suffix>`` images, all with distinct bytes; return ``root``."""
    for c, (name, count) in enumerate(sorted(counts.items())):
        for i in range(count):
            path = root / name / f"{i:03d}{suffix}"
            make_image(path, size, (c * 37 % 256, i % 256, i // 256), note=str(path))
    return root


def png_with_size(width: int, height: int) -> bytes:
    """A valid 1x1 PNG whose IHDR claims ``width`` x ``height`` (CRC fixed): a cheap bomb."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1), 0).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytearray(data[12:29])  # type + 13 data bytes
    ihdr[4:12] = struct.pack(">II", width, height)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(data)


def make_bad_files(folder: Path) -> dict[str, str]:
    """Write one file of every bad kind into ``folder``; return {filename: reason substring}."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    noise = random.Random(0)
    pixels = bytes(noise.randrange(256) for _ in range(96 * 64 * 3))
    Image.frombytes("RGB", (96, 64), pixels).save(buffer, format="JPEG", quality=90)
    jpeg = buffer.getvalue()
    (folder / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "garbage.jpg").write_bytes(bytes(noise.randrange(256) for _ in range(2048)))
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "text.png").write_text("this is not a picture\n", encoding="utf-8")
    (folder / "bomb.png").write_bytes(png_with_size(30_000, 30_000))
    return dict(BAD_KINDS)


def copy_demo(
    dest: Path,
    classes: Sequence[str],
    splits: Sequence[str] | Mapping[str, int] = ("train", "validation", "test"),
) -> Path:
    """Copy some classes of the bundled demo photos (real JPEGs) into ``dest/<split>/<class>``;
    ``splits`` may give the number of photos per class of each split (the first ones)."""
    from headstart.demo import demo_data_dir

    counts = splits if isinstance(splits, Mapping) else dict.fromkeys(splits, None)
    for split, n in counts.items():
        for cls in classes:
            (dest / split / cls).mkdir(parents=True, exist_ok=True)
            for f in sorted((demo_data_dir() / split / cls).iterdir())[:n]:
                shutil.copy(f, dest / split / cls / f.name)
    return dest


def kill_after_checkpoint(command: list[str], run: Path, env: dict[str, str]) -> None:
    """Start ``command``, wait until ``run/checkpoints/last.ckpt`` exists, then ``kill -9``
    it (a test fails when the command ended first)."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(command, env=env)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    if proc.wait() != -signal.SIGKILL:
        raise AssertionError("the run ended before it could be killed")
