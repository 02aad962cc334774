"""Writing explanations: the overlay as a PNG, atomically."""

from __future__ import annotations

import io
from pathlib import Path

from headstart.explain.cam import Explanation
from headstart.fsutil import atomic_write_bytes

__all__ = ["overlay_png", "save_overlay"]


def overlay_png(expl: Explanation) -> bytes:
    """The overlay encoded as PNG bytes (e.g. for an HTML report or an HTTP response)."""
    buffer = io.BytesIO()
    expl.overlay.save(buffer, format="PNG")
    return buffer.getvalue()


def save_overlay(expl: Explanation, path: str | Path) -> Path:
    """Write the overlay of ``expl`` to ``path`` as PNG (temp file + rename); returns the path.

    Missing parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, overlay_png(expl))
    return path
