"""Turn what a user types (files, folders, globs) into a list of image paths.

A folder is read by the data scan's walk (:func:`headstart.data.walk.walk`): the same image
names, hidden names and symlink policy as ``headstart fit``.  What the walk could not read below
it (a sub-folder it could not list, an image of a format this Pillow cannot decode, a broken
link) is listed too, so that decoding it gives that path an error row with its reason instead of
the path vanishing.
"""

from __future__ import annotations

import csv
import glob
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from headstart.data import Problem
from headstart.data.texts import read_text_file, text_problem
from headstart.data.walk import UNREADABLE, walk
from headstart.errors import DataError, PathNotFoundError

__all__ = ["expand_inputs", "expand_texts"]


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


def expand_texts(
    items: Iterable[str | Path], text_column: str = "text"
) -> list[tuple[Path, str, str | None]]:
    """What a user hands a text model, as (source, text, problem) rows: a ``.txt`` file is one
    text; a ``.csv`` file gives the ``text_column`` cell of each row (source ``file.csv#line``);
    a folder gives its ``.txt`` files (recursively); anything else is itself a text (source
    ``text N``, N from 1).  ``problem`` says why a text cannot be used (empty, undecodable),
    else None."""
    rows: list[tuple[Path, str, str | None]] = []
    for n, item in enumerate(items, start=1):
        value = str(item)
        path = Path(value)
        try:  # "" would be Path("."), the current folder: a blank item is an (empty) text
            is_dir = bool(value.strip()) and path.is_dir()
            kind = "folder" if is_dir else path.suffix.lower() if path.is_file() else ""
        except OSError:  # e.g. a name too long to be a path: a text
            kind = ""
        if kind == "folder":
            tree, _ = walk(path.resolve())
            for file in tree.all_texts():
                rows.append((file, *read_text_file(file)))
        elif kind == ".txt":
            rows.append((_absolute(path), *read_text_file(path)))
        elif kind == ".csv":
            rows += _csv_texts(_absolute(path), text_column)
        else:
            text = value.strip()
            rows.append((Path(f"text {n}"), text, text_problem(text)))
    return rows


def _csv_texts(path: Path, column: str) -> list[tuple[Path, str, str | None]]:
    try:
        with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as fh:
            reader = csv.DictReader(fh)
            names = [c.strip() for c in reader.fieldnames or []]
            if column not in names:
                raise DataError(
                    f"{path.name} has no text column '{column}'; found: "
                    f"{', '.join(repr(c) for c in names) or 'no header'} (set --text-column)"
                )
            reader.fieldnames = names
            out = []
            for row in reader:
                text = (row.get(column) or "").strip()
                out.append((Path(f"{path}#{reader.line_num}"), text, text_problem(text)))
            return out
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None
