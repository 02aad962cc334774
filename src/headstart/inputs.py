"""Turn what a user types (files, folders, globs) into a list of image paths.

A folder is read by the data scan's walk (:func:`headstart.data.walk.walk`): the same image
names, hidden names and symlink policy as ``headstart fit``.  What the walk could not read below
it (a sub-folder it could not list, an image of a format this Pillow cannot decode, a broken
link) is listed too, so that decoding it gives that path an error row with its reason instead of
the path vanishing.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from headstart.data import Problem
from headstart.data.walk import UNREADABLE, walk
from headstart.errors import PathNotFoundError

__all__ = ["expand_inputs"]


def _images_under(folder: Path) -> list[Path]:
    """The images below ``folder`` and the paths below it that get an error row, sorted."""
    tree, problems = walk(folder.resolve())
    return sorted([*tree.all_images(), *(p.path for p in problems if _gets_a_row(p))])


def _gets_a_row(problem: Problem) -> bool:
    """Whether a path the walk did not read is answered with an error row.

    Not a link to a folder read through another path or containing it (its images are there
    once already), nor a pipe or device (reading one would block)."""
    try:
        mode = os.stat(problem.path).st_mode
    except OSError:
        return True  # a broken link or a link loop: decoding says so
    if stat.S_ISDIR(mode):
        return problem.reason.startswith(UNREADABLE)
    return stat.S_ISREG(mode)  # e.g. an unsupported format


def _absolute(path: Path) -> Path:
    """The real path; a link leading nowhere stays itself (absolute), so its row names it."""
    try:
        return path.resolve(strict=True)
    except (OSError, RuntimeError):  # missing target, or a loop (RuntimeError before 3.13)
        return Path(os.path.abspath(path))


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files as given (any extension: a bad one gets an error row later), folders searched
    recursively for images (and what could not be read there, see the module docstring), and
    glob patterns expanded.  An item matching nothing is an error."""
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
        absolute = _absolute(p)
        if absolute not in seen:
            seen.add(absolute)
            unique.append(absolute)
    return unique
