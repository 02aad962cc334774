"""The manifest: every usable image with its labels, split and content hash, and the problems found.

One row per image.  Labels are kept per *task* (a label column) and each cell holds a tuple of
labels, so a multi-task CSV (several label columns) and a multi-label row (several labels in one
cell) fit this format as they are; a plain classification data set has the one task ``"label"``
with one label per row.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_TASK",
    "LABEL_SEPARATOR",
    "SPLITS",
    "DuplicateGroup",
    "Manifest",
    "Problem",
    "Sample",
    "Task",
]

DEFAULT_TASK = "label"
SPLITS = ("train", "val", "test")
LABEL_SEPARATOR = "|"


@dataclass(frozen=True)
class Sample:
    """One image: absolute path, labels per task, split name and the sha256 of the file's bytes."""

    path: Path
    labels: Mapping[str, tuple[str, ...]]
    split: str
    sha256: str

    @property
    def label(self) -> str:
        """The single label of the first task (plain multi-class data)."""
        return next(iter(self.labels.values()))[0]

    @property
    def label_text(self) -> str:
        """Every label, for display: ``a|b`` per task, tasks joined with ``; ``."""
        return "; ".join(LABEL_SEPARATOR.join(cell) for cell in self.labels.values())


@dataclass(frozen=True)
class Task:
    """One label column: its classes, and whether an image may hold several (or none) of them."""

    name: str
    classes: tuple[str, ...]
    multi_label: bool = False

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "classes": list(self.classes), "multi_label": self.multi_label}


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
    classes: list[str]
    problems: list[Problem] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    tasks: tuple[str, ...] = (DEFAULT_TASK,)
    split_source: str = "folders"  # "folders", "csv" or "random (seed=S, val=F, test=F)"
    task_classes: dict[str, list[str]] = field(default_factory=dict)
    """Classes per task; a task missing here has :attr:`classes`."""
    multi_label: tuple[str, ...] = ()
    """The tasks whose images may hold several labels."""

    @property
    def targets(self) -> tuple[Task, ...]:
        """Every task with its classes, in column order."""
        return tuple(
            Task(t, tuple(self.task_classes.get(t, self.classes)), t in self.multi_label)
            for t in self.tasks
        )

    @property
    def is_plain(self) -> bool:
        """One task with exactly one label per image (what every command supports)."""
        return len(self.tasks) == 1 and not self.multi_label

    def split(self, name: str) -> list[Sample]:
        """The samples of one split ("train", "val" or "test"), in manifest order."""
        return [s for s in self.samples if s.split == name]

    def splits_present(self) -> list[str]:
        return [name for name in SPLITS if any(s.split == name for s in self.samples)]

    def without(self, paths: Iterable[Path], reasons: Mapping[Path, str]) -> Manifest:
        """A copy with ``paths`` removed from the samples and recorded as problems."""
        drop = set(paths)
        kept = [s for s in self.samples if s.path not in drop]
        extra = [Problem(p, reasons[p]) for p in sorted(drop)]
        return Manifest(
            root=self.root,
            samples=kept,
            classes=self.classes,
            problems=[*self.problems, *extra],
            duplicates=self.duplicates,
            tasks=self.tasks,
            split_source=self.split_source,
            task_classes=self.task_classes,
            multi_label=self.multi_label,
        )

    def data_hash(self) -> str:
        """A sha256 over (relative path, split, labels, content hash) of every sample."""
        digest = hashlib.sha256()
        for s in sorted(self.samples, key=lambda s: str(s.path)):
            labels = ";".join(f"{t}={LABEL_SEPARATOR.join(s.labels[t])}" for t in self.tasks)
            digest.update(f"{self._rel(s.path)}\t{s.split}\t{labels}\t{s.sha256}\n".encode())
        return digest.hexdigest()

    def relative(self, path: Path) -> str:
        """``path`` relative to the data root (POSIX form), or as given when outside it."""
        return self._rel(path)

    def _rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def write_csv(self, path: Path) -> None:
        """Write the manifest as CSV: path (relative to root), split, sha256, a column per task."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "split", "sha256", *self.tasks])
            for s in self.samples:
                cells = [LABEL_SEPARATOR.join(s.labels[t]) for t in self.tasks]
                writer.writerow([self._rel(s.path), s.split, s.sha256, *cells])
        tmp.replace(path)

    def write_problems(self, path: Path) -> None:
        """Write the problems and duplicate groups as CSV (kind, path, reason)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["kind", "path", "reason"])
            for p in self.problems:
                writer.writerow(["left out", p.path.as_posix(), p.reason])
            for group in self.duplicates:
                kind = "duplicate across splits" if group.cross_split else "duplicate"
                for path_, split in zip(group.paths, group.splits, strict=True):
                    writer.writerow(
                        [kind, path_.as_posix(), f"same bytes ({split}) {group.sha256[:12]}"]
                    )
        tmp.replace(path)
