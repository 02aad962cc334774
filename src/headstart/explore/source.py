"""Read what explore looks at: labelled data (a class-folder tree or a CSV, scanned as ``fit``
scans it) or a folder of unlabelled images, embedded through the shared cache.

The data scan insists on labels (class sub-folders, at least two classes), so an unlabelled
folder is read by :func:`headstart.embedding.embed_unlabelled`: every image below it (the
scan's own walk: same image names, hidden names and symlink policy), hashed, and embedded with
the config's cache store, so a later ``fit`` of the same images reuses the embeddings.

``labelled=None`` decides by trying the scan: a CSV, or a folder the scan reads as classes, is
labelled; a folder the scan refuses (no class sub-folders, a single class) is read unlabelled
and the scan's reason kept as a note.  A folder of sub-folders that are not classes (dates,
cameras) scans as classes: pass ``labelled=False``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from headstart.backbones import BackboneRef
from headstart.config import FitConfig
from headstart.embedding import EmbeddedData, embed_data, embed_unlabelled, scan_data
from headstart.errors import DataError, PathNotFoundError

__all__ = ["Source", "read_source"]


@dataclass(frozen=True)
class Source:
    """Rows to explore: paths, each row's label (None when unlabelled), sha256 and embedding."""

    root: Path
    paths: list[Path]
    labels: list[str | None]
    shas: list[str]
    features: np.ndarray
    task: str | None = None
    embedded: EmbeddedData | None = None
    notes: list[str] = field(default_factory=list)
    keys: tuple[str, ...] = ()
    """The embedding-store tables the features came from."""

    @property
    def texts(self) -> list[str] | None:
        """Each row's text when the data is text, else None."""
        if self.embedded is None or self.embedded.manifest.modality != "text":
            return None
        return self.embedded.manifest.texts


def read_source(
    data: str | Path,
    config: FitConfig,
    *,
    labelled: bool | None = None,
    task: str | None = None,
    progress: bool = True,
    ref: BackboneRef | None = None,
) -> Source:
    """Embed ``data`` (see the module docstring for ``labelled``); ``task``: which task of a
    multi-task data set gives the labels (None: the first multi-class one)."""
    path = Path(data).expanduser()
    if not path.exists():
        raise PathNotFoundError(f"no such file or folder: '{path}'")
    if labelled is False:
        return _unlabelled(path, config, progress, ref, [])
    try:
        manifest = scan_data(path, config)
    except DataError as exc:  # only the scan decides; an embedding error is an error
        if labelled or not path.is_dir():
            raise
        note = f"read as unlabelled images: {exc}"
        return _unlabelled(path, config, progress, ref, [note])
    return _labelled(embed_data(manifest, config, progress=progress, ref=ref), task)


def _labelled(embedded: EmbeddedData, task: str | None) -> Source:
    manifest = embedded.manifest
    notes = [f"left out {len(manifest.problems)} unusable files"] if manifest.problems else []
    multi_class = [t for t in manifest.targets if not t.multi_label]
    if task is not None:
        chosen = manifest.task(task)
        if chosen.multi_label:
            raise DataError(f"task '{chosen.name}' is multi-label; explore needs a multi-class one")
    elif multi_class:
        chosen = multi_class[0]
    else:
        names = ", ".join(t.name for t in manifest.targets)
        notes.append(f"no multi-class task ({names} multi-label): explored without labels")
        return Source(
            manifest.root,
            [s.path for s in manifest.samples],
            [None] * len(manifest.samples),
            [s.sha256 for s in manifest.samples],
            embedded.features,
            None,
            embedded,
            notes,
            embedded.extraction.keys,
        )
    return Source(
        manifest.root,
        [s.path for s in manifest.samples],
        [s.labels[chosen.name][0] for s in manifest.samples],
        [s.sha256 for s in manifest.samples],
        embedded.features,
        chosen.name,
        embedded,
        notes,
        embedded.extraction.keys,
    )


def _unlabelled(
    folder: Path, config: FitConfig, progress: bool, ref: BackboneRef | None, notes: list[str]
) -> Source:
    if not folder.is_dir():
        raise DataError(f"unlabelled data must be a folder of images, not the file '{folder}'")
    found = embed_unlabelled(folder, config, ref=ref, progress=progress, unique=False)
    if len(found.paths) < 2:
        raise DataError(
            f"found {len(found.paths)} usable image(s) under '{folder}'; need at least two"
        )
    if found.unusable:
        notes = [*notes, f"left out {found.unusable} unusable or unreadable files"]
    return Source(
        folder.resolve(),
        found.paths,
        [None] * len(found.paths),
        found.shas,
        found.features,
        None,
        None,
        notes,
        found.extraction.keys if found.extraction is not None else (),
    )
