"""Safe image decoding: a cheap header probe for scans and a full RGB decode for training.

Both functions accept a path, raw bytes or a binary file object (uploads in the web service), keep
no global state (safe in DataLoader worker processes) and turn every decoder failure into a short
reason: :func:`probe_image` returns it, :func:`load_rgb` raises it as
:class:`~headstart.errors.ImageError`.  Pillow's own global limits are never changed; the pixel
limit is checked here, per call.
"""

from __future__ import annotations

import importlib
import io
import os
import re
import stat
import struct
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, features

from headstart.errors import ConfigError, ImageError

__all__ = [
    "BACKGROUND",
    "DEFAULT_MAX_PIXELS",
    "DRAFT_MODE",
    "GREY_RANGES",
    "IMAGE_EXTENSIONS",
    "STRETCH_FLOOR",
    "TRANSPARENT_MODES",
    "ImageSource",
    "decode_each",
    "load_rgb",
    "path_problem",
    "probe_image",
    "to_rgb",
    "unsupported_format",
]

DEFAULT_MAX_PIXELS: int = 89_478_485  # Pillow's default Image.MAX_IMAGE_PIXELS
# How load_rgb / to_rgb turn pixels into 8-bit RGB; the ONNX export's preprocessing recipe
# (headstart.export.recipe) states these same constants.
#: The mode load_rgb asks a JPEG's reduced-size decode for (``im.draft(DRAFT_MODE, ...)``).
DRAFT_MODE = "RGB"
#: Modes composited over :data:`BACKGROUND` (so is any image with a "transparency" entry).
TRANSPARENT_MODES: frozenset[str] = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
#: Opaque white (RGBA): what transparent pixels become.
BACKGROUND: tuple[int, int, int, int] = (255, 255, 255, 255)
#: One-channel integer / float samples to 8 bit: the first (low, high) range holding every
#: sample makes ``high`` the full scale; when none does, the samples are shifted by their minimum
#: and the full scale is max(max - min, :data:`STRETCH_FLOOR`).
GREY_RANGES: Mapping[str, tuple[tuple[float, float], ...]] = {
    "integer": ((0, 255), (0, 65535)),
    "float": ((0.0, 1.0), (0.0, 255.0)),
}
STRETCH_FLOOR: Mapping[str, float] = {"integer": 1.0, "float": 1e-12}
# Image file extensions and their format.  A data set's file is taken (by the scan, and by
# ``predict FOLDER``) when this Pillow, with any plugin installed, decodes its format; a file of a
# format it cannot decode is reported as unsupported, never skipped silently.
_FORMATS: dict[str, str] = {
    **dict.fromkeys((".jpg", ".jpeg", ".jpe", ".jfif"), "JPEG"),
    ".png": "PNG",
    ".bmp": "BMP",
    ".gif": "GIF",
    ".webp": "WEBP",
    **dict.fromkeys((".tif", ".tiff"), "TIFF"),
    **dict.fromkeys((".pbm", ".pgm", ".ppm", ".pnm"), "PPM"),
    **dict.fromkeys((".jp2", ".j2k"), "JPEG2000"),
    **dict.fromkeys((".avif", ".avifs"), "AVIF"),
    **dict.fromkeys((".heic", ".heif", ".hif"), "HEIF"),
    ".jxl": "JXL",
}
# Modules that give Pillow the format, tried in order; a third-party plugin registers on import.
_PLUGINS: dict[str, tuple[str, ...]] = {
    "JPEG": ("PIL.JpegImagePlugin",),
    "PNG": ("PIL.PngImagePlugin",),
    "BMP": ("PIL.BmpImagePlugin",),
    "GIF": ("PIL.GifImagePlugin",),
    "WEBP": ("PIL.WebPImagePlugin",),
    "TIFF": ("PIL.TiffImagePlugin",),
    "PPM": ("PIL.PpmImagePlugin",),
    "JPEG2000": ("PIL.Jpeg2KImagePlugin",),
    "AVIF": ("PIL.AvifImagePlugin", "pillow_avif"),
    "HEIF": ("pillow_heif",),
    "JXL": ("pillow_jxl",),
}
# Pillow's own plugins for these exist even when Pillow was built without the library.
_PILLOW_FEATURE = {"WEBP": "webp", "JPEG2000": "jpg_2000", "AVIF": "avif"}
_INSTALL_HINT = {
    "AVIF": "install pillow-avif-plugin (or a Pillow built with AVIF)",
    "HEIF": "install pillow-heif",
    "JXL": "install pillow-jxl-plugin",
}
# Camera raw and vector files: no Pillow plugin here reads them.
_FOREIGN_EXTENSIONS = frozenset(
    {".svg", ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".raw"}
)


def _decodable(fmt: str) -> bool:
    """Whether this Pillow (with the plugins installed here) can decode ``fmt``."""
    for name in _PLUGINS[fmt]:
        try:
            module = importlib.import_module(name)
            if name == "pillow_heif":  # the one plugin that registers on request, not on import
                module.register_heif_opener()
        except Exception:  # missing, or broken against this Pillow: not usable here
            continue
        feature = _PILLOW_FEATURE.get(fmt) if name.startswith("PIL.") else None
        if feature is None or features.check(feature):
            return True
    return False


_DECODABLE: dict[str, bool] = {fmt: _decodable(fmt) for fmt in _PLUGINS}
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    ext for ext, fmt in _FORMATS.items() if _DECODABLE[fmt]
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
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError)


def probe_image(source: ImageSource, max_pixels: int = DEFAULT_MAX_PIXELS) -> str | None:
    """Check a file cheaply, without decoding its pixels; return why it is unusable, or None.

    Reasons: ``'empty file (0 bytes)'``, ``'not an image (cannot identify format)'``,
    ``'decompression bomb: 30000x30000 px > limit 89,478,485 px'``, ``'unreadable: <os error>'``
    and, for a JPEG/PNG/GIF that does not end with its format's trailer,
    ``'truncated or corrupt image data'`` (only after a full decode confirms it).  A path is also
    refused for its name (:func:`unsupported_format`), or for not being a regular file.
    """
    if isinstance(source, str | os.PathLike):
        if (reason := unsupported_format(os.fspath(source))) is not None:
            return reason
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
    scaled (not clipped) to 8 bit.  A path of a format this Pillow cannot decode
    (:func:`unsupported_format`), a folder or a pipe is refused with that reason.
    """
    if draft_size is not None and draft_size < 1:
        raise ConfigError(f"draft_size must be a positive number of pixels, got {draft_size}")
    with _open(source) as im:
        reason = _size_reason(im.size, max_pixels)
        if reason is not None:
            raise ImageError(reason)
        if draft_size is not None:
            im.draft(DRAFT_MODE, (draft_size, draft_size))  # no-op for anything but JPEG
        try:
            im.load()
        except _DECODE_ERRORS as exc:
            raise ImageError(TRUNCATED) from exc
        image: Image.Image = im
        # A malformed EXIF block should not cost the image: keep it unrotated.
        with suppress(*_DECODE_ERRORS):
            image = ImageOps.exif_transpose(im)
        return to_rgb(image)


def unsupported_format(name: str) -> str | None:
    """Why a file named ``name`` is an image this Pillow cannot decode, or None.

    None for a decodable format (see ``IMAGE_EXTENSIONS``) and for files that are not images by
    their extension (notes, CSVs).  The reason names the extension and what would add support.
    """
    ext = os.path.splitext(name)[1].lower()
    fmt = _FORMATS.get(ext)
    if fmt is not None and not _DECODABLE[fmt]:
        hint = _INSTALL_HINT.get(fmt, f"this Pillow was built without {fmt}")
        return f"unsupported format ({ext}): {hint}, or convert to JPEG/PNG"
    if ext in _FOREIGN_EXTENSIONS:
        return f"unsupported format ({ext}): convert to JPEG/PNG"
    return None


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a loaded image of any Pillow mode to 8-bit RGB (see :func:`load_rgb`)."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if mode in TRANSPARENT_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND)
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale integer or float samples into 0..255 by :data:`GREY_RANGES`."""
    arr = values.astype(np.float64)
    if arr.ndim == 3:  # e.g. multi-channel I;16 variants: keep the first channel
        arr = arr[..., 0]
    low, high = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    kind = "float" if values.dtype.kind == "f" else "integer"
    for range_low, range_high in GREY_RANGES[kind]:
        if low >= range_low and high <= range_high:
            scale = float(range_high)
            break
    else:
        if np.isnan(low):  # a NaN sample: the widest range, unshifted (NaN pixels end as 0)
            scale = float(range_high)
        else:
            arr, scale = arr - low, max(high - low, STRETCH_FLOOR[kind])
    return np.clip(np.rint(arr * (255.0 / scale)), 0, 255).astype(np.uint8)


def _small_file_bytes(path: Path) -> bytes | None:
    """A small file's bytes (one read serves the header and the trailer), else None."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > _READ_WHOLE_LIMIT:
            return None  # a pipe's read would block, a folder's fail: _open says why
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
    _check_source(fp)
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


def _check_source(fp: str | os.PathLike[str] | BinaryIO) -> None:
    """Refuse before Pillow reads: an empty source, and a path that cannot be an image file."""
    if isinstance(fp, str | os.PathLike):
        reason = unsupported_format(os.fspath(fp)) or path_problem(Path(fp))
    elif isinstance(fp, io.BytesIO):
        reason = None if len(fp.getbuffer()) else _EMPTY
    else:
        return
    if reason is not None:
        raise ImageError(reason)


def path_problem(path: Path) -> str | None:
    """Why ``path`` is no image file to read, without reading it: missing or unreadable, a folder
    (``'unreadable folder: <os error>'`` when it cannot be listed either), a pipe or device
    (opening one would block), or empty; None for a regular file with bytes."""
    try:
        info = path.stat()
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    if stat.S_ISDIR(info.st_mode):
        # ``predict FOLDER`` lists a sub-folder it could not read, so that it gets an error row.
        try:
            with os.scandir(path):
                pass
        except OSError as exc:
            return f"unreadable folder: {exc.strerror or exc}"
        return "a folder, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file (a pipe, socket or device)"
    return None if info.st_size else _EMPTY


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
