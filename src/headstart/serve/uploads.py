"""Uploads: what one request may carry (:class:`Limits`), the body-size cap while it streams
in, the multipart form's files, and their safe decoding (magic bytes, allowed formats, a pixel
limit); every refusal is an :class:`ApiError` answered as JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headstart.data import load_rgb
from headstart.errors import ConfigError, ImageError

__all__ = [
    "ALLOWED_FORMATS",
    "ApiError",
    "BodyLimit",
    "Limits",
    "decode_upload",
    "json_error",
    "sniff_format",
    "uploads",
]

ALLOWED_FORMATS: frozenset[str] = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)


@dataclass(frozen=True)
class Limits:
    """What one request may carry; larger or other input is refused with a JSON error."""

    max_request_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_files: int = 16
    formats: frozenset[str] = ALLOWED_FORMATS
    max_batch: int = 16
    max_wait_ms: float = 5.0
    timeout_s: float = 30.0
    """How long the server waits for a request's headers or the next part of its body."""
    max_texts: int = 64
    """A text model: the most texts in one request."""
    max_text_chars: int = 10_000
    """A text model: the longest text (characters); an encoder reads a few hundred tokens."""

    def __post_init__(self) -> None:
        names = ("max_request_bytes", "max_pixels", "max_files", "max_batch", "max_texts")
        for name in (*names, "max_text_chars"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be more than 0 seconds, got {self.timeout_s}")
        hard = pillow_pixel_limit()
        if hard is not None and self.max_pixels > hard:
            raise ConfigError(
                f"max_pixels {self.max_pixels:,} is above Pillow's own limit of {hard:,} px "
                "(twice PIL.Image.MAX_IMAGE_PIXELS), which would refuse such images first"
            )
        unknown = sorted(set(self.formats) - ALLOWED_FORMATS)
        if unknown:
            known = ", ".join(sorted(ALLOWED_FORMATS))
            raise ConfigError(f"unknown image formats {', '.join(unknown)}; known: {known}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["formats"] = sorted(self.formats)
        return out


class ApiError(Exception):
    """An error answered as ``{"error": message}`` with ``status`` (and ``headers``)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def pillow_pixel_limit() -> int | None:
    """The size (pixels) above which Pillow itself refuses to open an image, before our own
    check sees it: twice ``PIL.Image.MAX_IMAGE_PIXELS`` (None when that is turned off)."""
    limit = Image.MAX_IMAGE_PIXELS
    return 2 * int(limit) if limit else None


def pixel_limit(limits: Limits) -> int:
    """The pixel limit in force: ``limits.max_pixels``, or Pillow's if that is lower."""
    hard = pillow_pixel_limit()
    return limits.max_pixels if hard is None else min(limits.max_pixels, hard)


def sniff_format(data: bytes) -> str | None:
    """The image format named by the first bytes (one of :data:`ALLOWED_FORMATS`), else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _MAGIC if data.startswith(magic)), None)


def decode_upload(data: bytes, limits: Limits, draft_size: int | None = None) -> Image.Image:
    """Decode uploaded bytes to RGB, or raise :class:`ApiError` (413, 415 or 422) saying why.

    ``draft_size``: as in :func:`~headstart.data.load_rgb`; the service passes the model's resize,
    the same decode rule as fitting and ``headstart predict``, so answers match theirs."""
    if not data:
        raise ApiError(422, "empty file (0 bytes)")
    fmt = sniff_format(data)
    allowed = ", ".join(sorted(limits.formats))
    if fmt is None:
        raise ApiError(415, f"not an image in an allowed format; allowed: {allowed}")
    if fmt not in limits.formats:
        raise ApiError(415, f"image format {fmt} is not allowed; allowed: {allowed}")
    try:
        return load_rgb(data, draft_size=draft_size, max_pixels=limits.max_pixels)
    except ImageError as exc:
        reason = str(exc)
        if reason.startswith("decompression bomb"):
            raise ApiError(413, _over_pixel_limit(reason, pixel_limit(limits))) from None
        raise ApiError(422, reason) from None


def _over_pixel_limit(reason: str, limit: int) -> str:
    """``reason`` quoting ``limit``: a huge image is refused by Pillow before our own check, and
    Pillow's message quotes Pillow's limit, not the server's."""
    size, over, _ = reason.partition(" > limit ")
    if not over:  # no size known: "decompression bomb: image too large"
        return f"{reason} (limit {limit:,} px)"
    return f"{size} > limit {limit:,} px"


class BodyLimit:
    """ASGI middleware: refuse a body over ``max_bytes`` by its Content-Length, and stop reading
    one (413) as soon as the streamed bytes pass the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        too_big = f"request body is larger than the limit of {self.max_bytes:,} bytes"
        try:
            declared = int(length) if length is not None else 0
        except ValueError:
            await json_error(400, "invalid Content-Length header")(scope, receive, send)
            return
        if declared > self.max_bytes:
            await json_error(413, too_big)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ApiError(413, too_big)
            return message

        await self.app(scope, limited, send)


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def uploads(request: Request, limits: Limits, fields: tuple[str, ...]) -> list[UploadFile]:
    """The uploaded files of a multipart request under ``fields`` (415/422/413 otherwise)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "multipart/form-data":
        shown = content_type or "none"
        raise ApiError(415, f"Content-Type must be multipart/form-data, got {shown}")
    try:
        form = await request.form(max_files=limits.max_files, max_fields=limits.max_files + 8)
    except StarletteHTTPException as exc:
        status = 413 if "Too many" in str(exc.detail) else 400
        raise ApiError(status, f"{exc.detail} (limit: {limits.max_files} files)") from None
    values = [v for name in fields for v in form.getlist(name)]
    if not values:
        raise ApiError(422, f"no file in the form field '{fields[0]}'")
    files = [v for v in values if isinstance(v, UploadFile)]
    if len(files) != len(values):
        raise ApiError(422, f"the form field '{fields[0]}' must hold files, not text")
    return files
