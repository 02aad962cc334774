"""Safe image decoding: a cheap header probe for scans and a full RGB decode for training.

Both functions accept a path, raw bytes or a binary file object (uploads in the web service), keep
no global state (safe in DataLoader worker processes) and turn every decoder failure into a short
reason: :func:`probe_image` returns it, :func:`load_rgb` raises it as
:class:`~headstart.errors.ImageError`.  Pillow's own global limits are never changed; the pixel
limit is checked here, per call.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from headstart.errors import ConfigError, ImageError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageSource",
    "decode_each",
    "load_rgb",
    "probe_image",
    "to_rgb",
]

DEFAULT_MAX_PIXELS: int = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
)

ImageSource = str | os.PathLike[str] | bytes | BinaryIO

TRUNCATED = "truncated or corrupt image data"
_NOT_AN_IMAGE = "not an image (cannot identify format)"
_EMPTY = "empty file (0 bytes)"
# Bytes a complete file of the format ends with; trailing NULs/whitespace are tolerated.
_TRAILERS: dict[str, tuple[bytes, ...]] = {
    "JPEG": (b"\xff\xd9",),
    "MPO": (b"\xff\xd9",),
    "PNG": (b"IEND\xaeB`\x82",),
    "GIF": (b"\x3b",),
}
_TAIL_BYTES = 64
_READ_WHOLE_LIMIT = 32 * 1024 * 1024
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2})  # baseline, extended, progressive Huffman
_PNG_KINDS = frozenset(
    {(0, d) for d in (1, 2, 4, 8, 16)}
    | {(3, d) for d in (1, 2, 4, 8)}
    | {(c, d) for c in (2, 4, 6) for d in (8, 16)}
)
_TRANSPARENT_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


def probe_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Check a file cheaply, without decoding its pixels; return why it is unusable, or None.

    Reasons: ``'empty file (0 bytes)'``, ``'not an image (cannot identify format)'``,
    ``'decompression bomb: 30000x30000 px > limit 89,478,485 px'``, ``'unreadable: <os error>'``
    and, for a JPEG/PNG/GIF that does not end with its format's trailer,
    ``'truncated or corrupt image data'`` (only after a full decode confirms it).
    """
    if isinstance(source, str | os.PathLike):
        source = _small_file_bytes(Path(source)) or source
    if isinstance(source, bytes | bytearray | memoryview):
        size = _fast_size(bytes(source))
        if size is not None:  # a well-formed, complete JPEG or PNG: no need to ask Pillow
            return _size_reason(size, max_pixels)
    try:
        with _open(source) as im:
            reason = _size_reason(im.size, max_pixels)
            if reason is None and not _has_trailer(im):
                # Rare (cut-off download, or trailing junk): only these pay for a decode.
                im.load()
            return reason
    except ImageError as exc:
        return str(exc)
    except _DECODE_ERRORS:
        return TRUNCATED


def load_rgb(
    source: ImageSource,
    draft_size: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> Image.Image:
    """Decode an image fully to RGB; raise :class:`ImageError` with a short reason on any failure.

    ``draft_size`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale while both sides stay at least
    ``draft_size`` (a 12 MP photo bound for a 224 px model decodes many times faster).  EXIF
    orientation is applied; transparent images are composited over white; 16/32-bit images are
    scaled (not clipped) to 8 bit.
    """
    if draft_size is not None and draft_size < 1:
        raise ConfigError(f"draft_size must be a positive number of pixels, got {draft_size}")
    with _open(source) as im:
        reason = _size_reason(im.size, max_pixels)
        if reason is not None:
            raise ImageError(reason)
        if draft_size is not None:
            im.draft("RGB", (draft_size, draft_size))  # no-op for anything but JPEG
        try:
            im.load()
        except _DECODE_ERRORS as exc:
            raise ImageError(TRUNCATED) from exc
        image: Image.Image = im
        # A malformed EXIF block should not cost the image: keep it unrotated.
        with suppress(*_DECODE_ERRORS):
            image = ImageOps.exif_transpose(im)
        return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a loaded image of any Pillow mode to 8-bit RGB (see :func:`load_rgb`)."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if mode in _TRANSPARENT_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale integer or float samples into 0..255 by the range their type implies."""
    arr = values.astype(np.float64)
    if arr.ndim == 3:  # e.g. multi-channel I;16 variants: keep the first channel
        arr = arr[..., 0]
    low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if values.dtype.kind == "f":
        scale = 1.0 if (low >= 0.0 and high <= 1.0) else 255.0
        if low < 0.0 or high > 255.0:
            arr, scale = arr - low, max(high - low, 1e-12)
    elif low >= 0 and high <= 255:
        scale = 255.0
    elif low >= 0 and high <= 65535:
        scale = 65535.0
    else:
        arr, scale = arr - low, max(high - low, 1.0)
    return np.clip(np.rint(arr * (255.0 / scale)), 0, 255).astype(np.uint8)


def _small_file_bytes(path: Path) -> bytes | None:
    """A small file's bytes (one read serves the header and the trailer), else None."""
    try:
        if path.stat().st_size > _READ_WHOLE_LIMIT:
            return None
        return path.read_bytes() or None  # empty: let _open say so
    except OSError:
        return None  # _open reports it


def _fast_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a plain, complete JPEG or PNG read from its header; None if unsure.

    Scans call this on every file, and Pillow's full header parse is most of a scan's time.
    Anything unusual (other formats, rare JPEG codings, a missing trailer) returns None and gets
    Pillow's verdict instead.
    """
    tail = data[-_TAIL_BYTES:].rstrip(b"\x00\r\n\t ")
    if data.startswith(b"\xff\xd8\xff") and tail.endswith(b"\xff\xd9"):
        return _jpeg_size(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n") and tail.endswith(_TRAILERS["PNG"]):
        if data[12:16] != b"IHDR" or len(data) < 26:
            return None
        width, height, depth, color = struct.unpack(">IIBB", data[16:26])
        if (color, depth) not in _PNG_KINDS or not (width and height):
            return None
        return width, height
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker in _JPEG_SOF:
            if pos + 10 > end:
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            components = data[pos + 9]
            ok = width and height and components in (1, 3, 4)
            return (width, height) if ok else None
        if marker == 0xDA or length < 2:  # scan data before a frame header: odd, ask Pillow
            return None
        pos += 2 + length
    return None


def _size_reason(size: tuple[int, int], max_pixels: int) -> str | None:
    width, height = size
    if width * height > max_pixels:
        return f"decompression bomb: {width}x{height} px > limit {max_pixels:,} px"
    return None


def _has_trailer(im: ImageFile.ImageFile) -> bool:
    trailers = _TRAILERS.get(im.format or "")
    fp = im.fp
    if trailers is None or fp is None:
        return True
    try:
        fp.seek(0, io.SEEK_END)
        end = fp.tell()
        fp.seek(max(0, end - _TAIL_BYTES))
        tail = fp.read(_TAIL_BYTES).rstrip(b"\x00\r\n\t ")
    except (OSError, ValueError):
        return False
    return tail.endswith(trailers)


@contextmanager
def _open(source: ImageSource) -> Iterator[ImageFile.ImageFile]:
    """Image.open with our reasons for failure; Pillow's bomb warning is silenced, not printed."""
    fp = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
    _check_not_empty(fp)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(fp)
    except Image.DecompressionBombError as exc:
        raise ImageError(_bomb_reason(str(exc))) from None
    except UnidentifiedImageError:
        raise ImageError(_NOT_AN_IMAGE) from None
    except OSError as exc:
        raise ImageError(f"unreadable: {exc.strerror or exc}") from None
    except _DECODE_ERRORS as exc:  # a plugin choking on a damaged header
        raise ImageError(TRUNCATED) from exc
    with im:
        yield im


def _check_not_empty(fp: str | os.PathLike[str] | BinaryIO) -> None:
    if isinstance(fp, str | os.PathLike):
        try:
            size = Path(fp).stat().st_size
        except OSError as exc:
            raise ImageError(f"unreadable: {exc.strerror or exc}") from None
    elif isinstance(fp, io.BytesIO):
        size = len(fp.getbuffer())
    else:
        return
    if size == 0:
        raise ImageError(_EMPTY)


def _bomb_reason(message: str) -> str:
    """Reword Pillow's hard-limit error (hit before our own check can run)."""
    numbers = [int(n) for n in re.findall(r"\d+", message)]
    if len(numbers) >= 2:
        return f"decompression bomb: {numbers[0]:,} px > limit {numbers[1]:,} px"
    return "decompression bomb: image too large"


def decode_each(
    paths: Sequence[Path],
    cut: Callable[[Image.Image], np.ndarray],
    shape: tuple[int, ...],
    draft_size: int | None,
) -> tuple[list[int], np.ndarray, dict[int, str]]:
    """Decode each file once and turn it into an array of ``shape`` with ``cut``: the kept
    indices, the (n_kept, *shape) float32 stack, and {index: reason} for unreadable files."""
    out = np.empty((len(paths), *shape), dtype=np.float32)
    kept: list[int] = []
    failed: dict[int, str] = {}
    for index, path in enumerate(paths):
        try:
            image = load_rgb(Path(path), draft_size=draft_size)
        except ImageError as exc:
            failed[index] = str(exc)
            continue
        except OSError as exc:
            failed[index] = f"unreadable: {exc.strerror or exc}"
            continue
        out[len(kept)] = cut(image)
        kept.append(index)
    return kept, out[: len(kept)], failed
