"""Walk a data folder into its split and class folders and image files, following symlinks safely.

:func:`class_folders` reads the layout (``root/<class>/...``, optionally under ``train/ val/
test/``); :func:`walk` is the walk below it.  The policy, in one place:

* Symlinks are followed wherever they point (a data set often links image folders in from
  elsewhere on disk), to files and to folders alike.
* A link is not followed when it is a loop, broken, points at a folder that contains it (or the
  data set), or points at a folder already scanned through another path: each real folder is read
  once, so no image is counted twice and no walk repeats itself.  Real folders win: every real
  folder under the data root is claimed before any link is followed, so a link can never take a
  class folder's images away from it.
* Every path not read is reported as a :class:`Problem` with its reason: a folder or file that
  cannot be read (permissions), a link not followed, an image of a format this Pillow cannot
  decode, an image-named pipe or device.  Hidden names (``.x``, ``__x``) are skipped silently.
* A split or class folder that cannot be read or followed, or a class folder left with no usable
  image because part of it could not be read, is a :class:`DataError`: exit 2 rather than a split
  that silently lost a class.

The tree keeps each path as the data set shows it (through links), never the resolved target.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Sequence, Set
from dataclasses import dataclass, field
from pathlib import Path

from headstart.data.images import IMAGE_EXTENSIONS, unsupported_format
from headstart.data.manifest import Problem
from headstart.data.splits import normalise_split
from headstart.errors import DataError

__all__ = [
    "UNREADABLE",
    "ClassFolder",
    "Folder",
    "check_class_folders",
    "class_folders",
    "hidden",
    "is_image_name",
    "walk",
]

UNREADABLE = "unreadable"  # how the reason for a file or folder that could not be read begins


@dataclass(eq=False)
class Folder:
    """A folder of the data set: its sub-folders and image files, or why it was not read."""

    path: Path
    folders: list[Folder] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    texts: list[Path] = field(default_factory=list)  # .txt files: a text data set's samples
    lost: str | None = None  # the reason it was not read (also reported); then it holds nothing

    @property
    def name(self) -> str:
        return self.path.name

    def all_images(self) -> list[Path]:
        """Every image file at any depth below this folder, sorted."""
        found: list[Path] = []
        for folder in self._walk():
            found += folder.images
        return sorted(found)

    def all_texts(self) -> list[Path]:
        """Every ``.txt`` file at any depth below this folder, sorted."""
        found: list[Path] = []
        for folder in self._walk():
            found += folder.texts
        return sorted(found)

    def _walk(self) -> Iterator[Folder]:
        stack = [self]
        while stack:
            folder = stack.pop()
            yield folder
            stack += folder.folders


@dataclass(frozen=True)
class ClassFolder:
    """A class folder of one split (None: the data set has no split folders) and its sample
    files: its images, or its ``.txt`` files in a text data set (see :func:`class_folders`)."""

    folder: Folder
    split: str | None
    images: tuple[Path, ...]

    @property
    def name(self) -> str:
        """The class."""
        return self.folder.name


def class_folders(root: Path) -> tuple[list[ClassFolder], list[Problem], str]:
    """The class folders under ``root`` (absolute, resolved), the problems found, and the
    modality: ``"text"`` when the tree holds ``.txt`` files and no image (each ``.txt`` file is
    then one sample), else ``"image"`` (text files are ignored).

    Problems are the paths not read (see the module docstring) and stray images, outside any class
    folder.  Raises :class:`DataError` for a layout that cannot be used."""
    tree, problems = walk(root)
    if tree.lost is not None:
        raise DataError(f"cannot read the data folder {root}: {tree.lost}")
    modality = "text" if tree.all_texts() and not tree.all_images() else "image"

    def samples(folder: Folder) -> list[Path]:
        return folder.all_texts() if modality == "text" else folder.all_images()

    split_dirs: dict[Folder, str] = {}
    for d in tree.folders:
        split = normalise_split(d.name)
        if split is not None:
            split_dirs[d] = split
    if split_dirs:
        # A link here that was not followed is not known to be a folder: it is only reported.
        others = [d.name for d in tree.folders if d not in split_dirs and d.lost is None]
        if others:
            raise DataError(
                f"{root} mixes split folders ({', '.join(d.name for d in split_dirs)}) with "
                f"other folders ({', '.join(others)}); put class folders inside the split folders"
            )
        seen: dict[str, str] = {}
        for d, name in split_dirs.items():
            if name in seen:
                raise DataError(
                    f"{root} has two folders for split '{name}': {seen[name]}, {d.name}"
                )
            seen[name] = d.name
            if d.lost is not None:
                raise DataError(f"cannot use split folder '{d.name}' of {root}: {d.lost}")
        bases: list[tuple[Folder, str | None]] = list(split_dirs.items())
    else:
        bases = [(tree, None)]
    found: list[ClassFolder] = []
    for base, split in bases:
        strays = base.texts if modality == "text" else base.images
        problems += [Problem(p, "not inside a class folder") for p in strays]
        for folder in base.folders:
            if folder.lost is not None:
                raise DataError(
                    f"cannot use class folder '{_relative(folder.path, root)}': {folder.lost}; "
                    "fix or remove it"
                )
            found.append(ClassFolder(folder, split, tuple(samples(folder))))
    if not found:
        where = "split folders of " if split_dirs else ""
        raise DataError(
            f"no class sub-folders in {where}{root}; expected {root}/<class>/<image> "
            f"(or a .csv file with path and label columns)"
        )
    return found, problems, modality


def check_class_folders(
    folders: Sequence[ClassFolder], used: Set[Path], problems: Sequence[Problem], root: Path
) -> None:
    """Raise when a class folder has no usable image because part of it could not be read.

    ``used`` holds the images kept.  Without this check the folder's split would silently lose
    the class.  Corrupt images do not count (the data's fault, reported per file; the scan
    raises when a class has none usable in any split); files and folders that could not be read,
    links not followed and unsupported formats do."""
    ordered = sorted(problems, key=lambda p: str(p.path))
    for class_folder in folders:
        if any(path in used for path in class_folder.images):
            continue
        here, images = class_folder.folder.path, set(class_folder.images)
        causes = [
            p
            for p in ordered
            if here in p.path.parents and (p.reason.startswith(UNREADABLE) or p.path not in images)
        ]
        if causes:
            first = causes[0]
            more = f" (and {len(causes) - 1} more)" if len(causes) > 1 else ""
            raise DataError(
                f"class folder '{_relative(here, root)}' has no usable image: "
                f"'{_relative(first.path, root)}': {first.reason}{more}; fix or remove it"
            )


def hidden(name: str) -> bool:
    """Names the scan skips without a word: dot files and ``__MACOSX``-style folders."""
    return name.startswith((".", "__"))


def is_image_name(name: str) -> bool:
    """A visible file whose extension is a format this Pillow decodes."""
    return not hidden(name) and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def walk(root: Path) -> tuple[Folder, list[Problem]]:
    """The tree under ``root`` (an absolute, resolved folder) and every path not read, sorted."""
    walker = _Walker(root)
    tree = Folder(root)
    if walker.claim(tree):
        walker.fill(tree)
    while walker.pending:  # links, one level of links at a time, in a stable order
        batch = sorted(walker.pending, key=lambda f: str(f.path))
        walker.pending = []
        for link in batch:
            if walker.follow(link):
                walker.fill(link)
    return tree, sorted(walker.problems, key=lambda p: str(p.path))


class _Walker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[Problem] = []
        self.pending: list[Folder] = []  # links to folders, followed after the real tree
        self._seen: dict[tuple[int, int], Path] = {}  # (device, inode) -> first path read

    def claim(self, folder: Folder) -> bool:
        """Mark a real folder as read; False (and reported) if it cannot be, or already was."""
        try:
            info = os.stat(folder.path)
        except OSError as exc:
            self._lose(folder, f"{UNREADABLE} folder: {_why(exc)}")
            return False
        first = self._seen.setdefault((info.st_dev, info.st_ino), folder.path)
        if first != folder.path:  # a bind mount or a hard-linked folder
            self._lose(folder, f"same folder as '{self._show(first)}', already scanned")
            return False
        return True

    def follow(self, link: Folder) -> bool:
        """Claim a link's target folder; False (and reported) when the policy says not to."""
        try:
            info = os.stat(link.path)
            target = Path(os.path.realpath(link.path))
            here = Path(os.path.realpath(link.path.parent))
        except OSError as exc:
            self._lose(link, _dead_link_reason(link.path, exc))
            return False
        if target == here or target in here.parents:
            reason = f"symlink to '{self._show(target)}', a folder containing it: not followed"
        elif target in self.root.parents:
            reason = f"symlink to '{target}', a folder containing the data set: not followed"
        elif (first := self._seen.get((info.st_dev, info.st_ino))) is not None:
            reason = f"symlink to '{self._show(first)}', already scanned: not followed"
        else:
            self._seen[(info.st_dev, info.st_ino)] = link.path
            return True
        self._lose(link, reason)
        return False

    def fill(self, start: Folder) -> None:
        """List ``start`` and the real folders below it; links to folders wait in ``pending``."""
        stack = [start]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder.path) as listing:
                    entries = sorted((e for e in listing if not hidden(e.name)), key=_name)
            except OSError as exc:
                self._lose(folder, f"{UNREADABLE} folder: {_why(exc)}")
                continue
            for entry in entries:
                try:
                    child = self._sort(folder, entry)
                except OSError as exc:
                    self._report(Path(entry.path), f"{UNREADABLE}: {_why(exc)}")
                    continue
                if child is not None:
                    stack.append(child)

    def _sort(self, folder: Folder, entry: os.DirEntry[str]) -> Folder | None:
        """File the entry under ``folder``; return a real sub-folder still to be listed."""
        path = Path(entry.path)
        if entry.is_symlink():
            self._sort_link(folder, path)
            return None
        if entry.is_dir(follow_symlinks=False):
            child = Folder(path)
            folder.folders.append(child)
            return child if self.claim(child) else None
        if entry.is_file(follow_symlinks=False):
            self._add_file(folder, path)
        elif _image_like(entry.name):
            self._report(path, "not a regular file (a pipe, socket or device)")
        return None

    def _sort_link(self, folder: Folder, path: Path) -> None:
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            reason = _dead_link_reason(path, exc)
            if _image_like(path.name):  # by its name, a link to a file
                self._report(path, reason)
            else:  # maybe a folder: keep it, so a lost class folder is seen as one
                lost = Folder(path)
                folder.folders.append(lost)
                self._lose(lost, reason)
            return
        if stat.S_ISDIR(mode):
            child = Folder(path)
            folder.folders.append(child)
            self.pending.append(child)
        elif stat.S_ISREG(mode):
            self._add_file(folder, path)
        elif _image_like(path.name):
            self._report(path, "symlink to something not a regular file (a pipe, socket, device)")

    def _add_file(self, folder: Folder, path: Path) -> None:
        if is_image_name(path.name):
            folder.images.append(path)
        elif path.suffix.lower() == ".txt":
            folder.texts.append(path)
        elif (reason := unsupported_format(path.name)) is not None:
            self._report(path, reason)

    def _lose(self, folder: Folder, reason: str) -> None:
        folder.lost = reason
        folder.folders, folder.images = [], []
        self._report(folder.path, reason)

    def _report(self, path: Path, reason: str) -> None:
        self.problems.append(Problem(path, reason))

    def _show(self, path: Path) -> str:
        return _relative(path, self.root)


def _relative(path: Path, root: Path) -> str:
    """A path relative to the data root when inside it (shorter messages), else absolute."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _image_like(name: str) -> bool:
    return is_image_name(name) or unsupported_format(name) is not None


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _dead_link_reason(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop: not followed"
    if exc.errno in (errno.ENOENT, errno.ENOTDIR):
        try:
            target = os.readlink(path)
        except OSError:
            return "broken symlink: not followed"
        return f"broken symlink to '{target}': not followed"
    return f"{UNREADABLE} symlink: {_why(exc)}"
