"""Images for checking an export: which files, their labels (when their folder names a class),
and decoding them exactly as the default runtime does (``load_rgb`` + ``Preprocessing``), once
per graph input (a fused backbone's parts each have their own preprocessing)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.backbones.preprocessing import Preprocessing
from headstart.data.images import decode_each
from headstart.demo import demo_data_dir
from headstart.errors import DataError
from headstart.inputs import expand_inputs

__all__ = [
    "CheckImages",
    "Decoded",
    "Images",
    "accuracy",
    "check_images",
    "decode_batch",
    "decode_inputs",
    "default_check_dir",
    "intersect",
]

#: A folder, a file, or several of them (as ``headstart predict`` takes them).
Images = str | Path | Sequence[str | Path]
#: Parity and int8 checks use at most this many images (evenly spread over the sorted list).
DEFAULT_LIMIT = 200
Decoded = tuple[list[int], np.ndarray, dict[int, str]]
"""Kept indices, their arrays stacked, and {index: reason} for the files not read."""


@dataclass(frozen=True)
class CheckImages:
    """Decoded check images: one batch per graph input (rows: the same images), their paths,
    and the files that could not be read."""

    paths: list[Path]
    batches: tuple[np.ndarray, ...]
    skipped: dict[Path, str]

    @property
    def batch(self) -> np.ndarray:
        """The first input's batch (the only one of a single backbone)."""
        return self.batches[0]

    def labels_for(self, classes: Sequence[str]) -> list[str | None]:
        """Each image's label among a multi-class task's ``classes``: its folder's name when
        that is one of them, else None."""
        known = set(classes)
        return [p.parent.name if p.parent.name in known else None for p in self.paths]


def default_check_dir() -> Path:
    """The bundled demo test photos (class sub-folders): the default check images."""
    return demo_data_dir() / "test"


def decode_batch(
    paths: Sequence[Path], prep: Preprocessing
) -> tuple[list[int], np.ndarray, dict[int, str]]:
    """Decode + preprocess ``paths``: kept indices, (n_kept, 3, crop, crop) float32 array, and
    {index: reason} for files that cannot be read (same decode as the default runtime)."""
    return decode_each(paths, prep, (3, prep.crop, prep.crop), prep.resize)


def intersect(decoded: Sequence[Decoded]) -> tuple[list[int], list[np.ndarray], dict[int, str]]:
    """Several decodes of the same files (one per input) -> the files every one kept, each
    input's arrays of them (rows aligned), and every file some decode failed on (the first
    decode's reason first)."""
    failed: dict[int, str] = {}
    for _, _, reasons in reversed(decoded):
        failed.update(reasons)
    kept = [i for i in decoded[0][0] if i not in failed]
    arrays = []
    for indices, array, _ in decoded:
        rows = [pos for pos, i in enumerate(indices) if i not in failed]
        arrays.append(array if len(rows) == len(indices) else array[rows])
    return kept, arrays, failed


def decode_inputs(
    paths: Sequence[Path], preps: Sequence[Preprocessing]
) -> tuple[list[int], list[np.ndarray], dict[int, str]]:
    """:func:`decode_batch` once per input's preprocessing, aligned by :func:`intersect`."""
    return intersect([decode_batch(paths, prep) for prep in preps])


def _spread(paths: list[Path], limit: int) -> list[Path]:
    if len(paths) <= limit:
        return paths
    picks = np.linspace(0, len(paths) - 1, limit).round().astype(int)
    return [paths[i] for i in sorted(set(picks.tolist()))]


def check_images(
    images: Images | None,
    prep: Preprocessing | Sequence[Preprocessing],
    *,
    limit: int = DEFAULT_LIMIT,
) -> CheckImages:
    """Decode the check images (default: the demo test photos) with ``prep`` (one per graph
    input for a fused backbone); at most ``limit`` images are used, spread evenly over the
    sorted list."""
    preps = [prep] if isinstance(prep, Preprocessing) else list(prep)
    if images is None:
        images = default_check_dir()
    items = [images] if isinstance(images, str | Path) else list(images)
    paths = _spread(expand_inputs(items), limit)
    if not paths:
        raise DataError(f"no image found in the check images {[str(i) for i in items]}")
    kept, batches, failed = decode_inputs(paths, preps)
    if not kept:
        raise DataError(
            f"none of the {len(paths)} check images can be read (e.g. {paths[0]}: {failed[0]})"
        )
    used = [paths[i] for i in kept]
    return CheckImages(used, tuple(batches), {paths[i]: why for i, why in failed.items()})


def accuracy(proba: np.ndarray, labels: Sequence[str | None], classes: Sequence[str]) -> float:
    """Top-1 accuracy on the labelled rows (NaN when none is labelled)."""
    rows = [i for i, label in enumerate(labels) if label is not None]
    if not rows:
        return float("nan")
    predicted = np.argmax(proba[rows], axis=1)
    truth = np.asarray([list(classes).index(str(labels[i])) for i in rows])
    return float(np.mean(predicted == truth))
