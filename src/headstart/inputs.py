"""Turn what a user types (files, folders, globs) into a list of image paths."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

from headstart.data.images import IMAGE_EXTENSIONS
from headstart.errors import PathNotFoundError

__all__ = ["expand_inputs"]


def _images_under(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files as given (any extension: a bad one gets an error row later), folders searched
    recursively for images, and glob patterns expanded.  An item matching nothing is an error."""
    paths: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            paths.extend(_images_under(path))
        elif path.exists():
            paths.append(path)
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True))
            if not matches:
                raise PathNotFoundError(f"no file matches '{text}'")
            for match in matches:
                paths.extend(_images_under(match) if match.is_dir() else [match])
        else:
            raise PathNotFoundError(f"no such file or folder: '{text}'")
    seen: set[Path] = set()
    unique = []
    for p in paths:
        resolved = p.resolve()
        if resolved not in seen:
            seen.add(resolved)
            unique.append(resolved)
    return unique
