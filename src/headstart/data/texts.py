"""Texts as samples: reading ``.txt`` files and CSV cells, the problems that leave one out, and
the content hash that keys a text's embedding (as a file's sha256 keys an image's)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from headstart.data.walk import UNREADABLE

__all__ = ["MAX_TEXT_CHARS", "read_text_file", "text_digest", "text_problem"]

#: Longer texts are refused as samples: an encoder reads a few hundred tokens at most, and a
#: multi-megabyte "text" is almost always a file put in the wrong folder.
MAX_TEXT_CHARS = 1_000_000


def text_digest(text: str) -> str:
    """sha256 of the text's UTF-8 bytes: the text's content hash."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def text_problem(text: str) -> str | None:
    """Why ``text`` (already stripped) cannot be a sample, or None.  Undecodable bytes read with
    ``errors="surrogateescape"`` show up as lone surrogates."""
    if not text:
        return "empty text"
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        return "undecodable bytes (not UTF-8 text)"
    if len(text) > MAX_TEXT_CHARS:
        return f"text of {len(text):,} characters (over {MAX_TEXT_CHARS:,}); not a sample"
    return None


def read_text_file(path: Path) -> tuple[str, str | None]:
    """The stripped text of a ``.txt`` file (UTF-8, a BOM dropped) and why it cannot be used
    (None when it can)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return "", f"{UNREADABLE}: {exc.strerror or exc}"
    text = data.decode("utf-8-sig", errors="surrogateescape").strip()
    return text, text_problem(text)
