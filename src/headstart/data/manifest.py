"""The manifest: every usable image with its labels, split and content hash, and the problems found.

One row per image.  The label schema is :attr:`Manifest.targets`: one :class:`Task` per label
column, each with its classes and whether an image may hold several of them (multi-label).  A
sample keeps a tuple of labels per task, so a plain classification data set is simply one
single-label task (named ``"label"``) whose cells hold one label each.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from headstart.errors import BundleError, ConfigError
from headstart.fsutil import atomic_write_text

__all__ = [
    "DEFAULT_TASK",
    "LABEL_SEPARATOR",
    "SPLITS",
    "DuplicateGroup",
    "Manifest",
    "Problem",
    "Sample",
    "Task",
    "indicator",
    "pick_task",
    "predicted_labels",
]

DEFAULT_TASK = "label"
SPLITS = ("train", "val", "test")
LABEL_SEPARATOR = "|"


@dataclass(frozen=True)
class Task:
    """One label column: its classes, and whether an image may hold several (or none) of them."""

    name: str
    classes: tuple[str, ...]
    multi_label: bool = False

    @property
    def kind(self) -> str:
        """``"multi-label"`` or ``"multi-class"``."""
        return "multi-label" if self.multi_label else "multi-class"

    def describe(self) -> str:
        """``name (kind, N classes)``, for messages."""
        noun = "labels" if self.multi_label else "classes"
        return f"{self.name} ({self.kind}, {len(self.classes)} {noun})"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "classes": list(self.classes), "multi_label": self.multi_label}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        """Inverse of :meth:`to_dict`; a malformed record is a :class:`BundleError`."""
        try:
            classes = tuple(str(c) for c in d["classes"])
            task = cls(str(d["name"]), classes, bool(d.get("multi_label", False)))
        except (KeyError, TypeError) as exc:
            raise BundleError(f"malformed task record {dict(d)!r}: {exc}") from None
        if len(classes) < (1 if task.multi_label else 2) or len(set(classes)) != len(classes):
            raise BundleError(f"task '{task.name}' has bad classes {list(classes)!r}")
        return task


def indicator(cells: Sequence[Sequence[str]], labels: Sequence[str]) -> NDArray[np.int8]:
    """(n, L) 0/1 matrix: row i has a 1 for each of ``cells[i]``'s labels."""
    index = {label: j for j, label in enumerate(labels)}
    out = np.zeros((len(cells), len(labels)), dtype=np.int8)
    for i, cell in enumerate(cells):
        for label in cell:
            if label in index:
                out[i, index[label]] = 1
    return out


def predicted_labels(task: Task, row: NDArray[Any], thresholds: NDArray[Any] | None) -> list[str]:
    """The labels chosen from one probability row: the best class (multi-class), or every label
    at or above its threshold (multi-label, most probable first; possibly none)."""
    if not task.multi_label:
        return [task.classes[int(np.argmax(row))]]
    cut = thresholds if thresholds is not None else np.full(len(row), 0.5)
    chosen = [j for j in range(len(row)) if row[j] >= cut[j]]
    chosen.sort(key=lambda j: -row[j])
    return [task.classes[j] for j in chosen]


def pick_task(tasks: Sequence[Task], name: str | None) -> Task:
    """The task called ``name`` (None: the first); an unknown name is a one-line error."""
    if name is None:
        return tasks[0]
    for task in tasks:
        if task.name == name:
            return task
    known = ", ".join(t.name for t in tasks)
    raise ConfigError(f"unknown task '{name}'; this model/data has: {known}")


@dataclass(frozen=True)
class Sample:
    """One image: absolute path, labels per task, split name and the sha256 of the file's bytes.

    A text sample also holds its ``text`` (stripped); its ``sha256`` is the text's UTF-8 digest
    and its ``path`` is the ``.txt`` file, or ``<file>.csv#<line>`` for a CSV row."""

    path: Path
    labels: Mapping[str, tuple[str, ...]]
    split: str
    sha256: str
    text: str | None = None

    @property
    def label_text(self) -> str:
        """Every label, for display: ``a|b`` per task, tasks joined with ``; ``."""
        return "; ".join(LABEL_SEPARATOR.join(cell) for cell in self.labels.values())


@dataclass(frozen=True)
class Problem:
    """A file left out of the run, and why (one short phrase)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class DuplicateGroup:
    """Files with identical bytes.  ``cross_split`` is True when they sit in more than one split."""

    sha256: str
    paths: tuple[Path, ...]
    splits: tuple[str, ...]

    @property
    def cross_split(self) -> bool:
        return len(set(self.splits)) > 1


@dataclass
class Manifest:
    """The result of scanning a folder or CSV; see :func:`headstart.data.scan`."""

    root: Path
    samples: list[Sample]
    targets: tuple[Task, ...]
    problems: list[Problem] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    split_source: str = "folders"  # "folders", "csv" or "random (seed=S, val=F, test=F)"
    source: Path | None = None
    """What was scanned: the folder, or the CSV file (``root`` is then the CSV's folder)."""
    modality: str = "image"
    """``"image"`` or ``"text"`` (each sample then holds its ``text``)."""

    @property
    def noun(self) -> str:
        """What the samples are called in sentences, plural: ``texts`` or ``images``."""
        return "texts" if self.modality == "text" else "images"

    @property
    def texts(self) -> list[str]:
        """Every sample's text, in order (text data only)."""
        return [s.text or "" for s in self.samples]

    def task(self, name: str | None = None) -> Task:
        """The task called ``name`` (None: the first)."""
        return pick_task(self.targets, name)

    def split(self, name: str) -> list[Sample]:
        """The samples of one split ("train", "val" or "test"), in manifest order."""
        return [s for s in self.samples if s.split == name]

    def rows(self, split: str) -> list[int]:
        """Indices into :attr:`samples` of one split, in manifest order."""
        return [i for i, s in enumerate(self.samples) if s.split == split]

    def splits_present(self) -> list[str]:
        return [name for name in SPLITS if any(s.split == name for s in self.samples)]

    def without(self, paths: Iterable[Path], reasons: Mapping[Path, str]) -> Manifest:
        """A copy with ``paths`` removed from the samples and recorded as problems."""
        drop = set(paths)
        kept = [s for s in self.samples if s.path not in drop]
        extra = [Problem(p, reasons[p]) for p in sorted(drop)]
        return replace(self, samples=kept, problems=[*self.problems, *extra])

    def data_hash(self) -> str:
        """A sha256 over (relative path, split, labels, content hash) of every sample."""
        digest = hashlib.sha256()
        names = [t.name for t in self.targets]
        for s in sorted(self.samples, key=lambda s: str(s.path)):
            labels = ";".join(f"{t}={LABEL_SEPARATOR.join(s.labels[t])}" for t in names)
            digest.update(f"{self.relative(s.path)}\t{s.split}\t{labels}\t{s.sha256}\n".encode())
        return digest.hexdigest()

    def relative(self, path: Path) -> str:
        """``path`` relative to the data root (POSIX form), or as given when outside it."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def write_csv(self, path: Path) -> None:
        """Write the manifest as CSV: path (relative to root), split, sha256, a column per task,
        and the text of each sample of text data."""
        text = ["text"] if self.modality == "text" else []
        rows = [["path", "split", "sha256", *(t.name for t in self.targets), *text]]
        for s in self.samples:
            cells = [LABEL_SEPARATOR.join(s.labels[t.name]) for t in self.targets]
            extra = [s.text or ""] if text else []
            rows.append([self.relative(s.path), s.split, s.sha256, *cells, *extra])
        atomic_write_text(path, _csv_text(rows))

    def write_problems(self, path: Path) -> None:
        """Write the problems and duplicate groups as CSV (kind, path, reason)."""
        rows = [["kind", "path", "reason"]]
        rows += [["left out", p.path.as_posix(), p.reason] for p in self.problems]
        for group in self.duplicates:
            kind = "duplicate across splits" if group.cross_split else "duplicate"
            for path_, split in zip(group.paths, group.splits, strict=True):
                rows.append([kind, path_.as_posix(), f"same bytes ({split}) {group.sha256[:12]}"])
        atomic_write_text(path, _csv_text(rows))


def _csv_text(rows: Sequence[Sequence[object]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue()
