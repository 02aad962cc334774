"""Multi-label and two-task data made from any class-folder data set, for trying those features.

Each composite puts two photos of different classes side by side (each fitted whole into
half of a square, so a backbone's centre crop keeps both).  Its ``items`` cell lists both
classes (a multi-label task: which items are in the picture) and its ``left`` cell the class on
the left (a multi-class task), so one CSV serves as a multi-label data set
(``data.label_column=items``) and as a two-task one (``data.label_column=[left,items]``).
Composites stay in the split their photos came from, so no photo crosses splits.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from PIL import Image

from headstart.data.images import load_rgb
from headstart.data.manifest import LABEL_SEPARATOR
from headstart.data.scan import scan
from headstart.errors import ConfigError
from headstart.fsutil import atomic_write_text

__all__ = ["compose_pairs"]


def _tile(path: Path, size: int) -> Image.Image:
    """The photo fitted whole into a (size, 2*size) grey box: the square composite then survives
    a backbone's centre crop with both items in view."""
    image = load_rgb(path, draft_size=2 * size)
    image.thumbnail((size, 2 * size))
    box = Image.new("RGB", (size, 2 * size), (128, 128, 128))
    box.paste(image, ((size - image.width) // 2, (2 * size - image.height) // 2))
    return box


def compose_pairs(
    source: str | Path,
    output: str | Path,
    *,
    per_image: float = 1.0,
    size: int = 160,
    seed: int = 0,
) -> Path:
    """Write composites of ``source`` (a folder with class sub-folders, split or not) under
    ``output`` and return ``output/labels.csv`` (columns path, split, left, items).  Each split
    gets ``per_image`` times as many composites as it has photos."""
    if per_image <= 0 or size < 16:
        raise ConfigError(f"per_image must be > 0 and size >= 16; got {per_image}, {size}")
    manifest = scan(source)
    task = manifest.task().name  # a class-folder data set: one single-label task
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = []
    for split in manifest.splits_present():
        samples = manifest.split(split)
        labels = np.array([s.labels[task][0] for s in samples])
        for k in range(max(1, round(per_image * len(samples)))):
            i = int(rng.integers(len(samples)))
            others = np.flatnonzero(labels != labels[i])
            j = int(rng.choice(others))
            a, b = samples[i], samples[j]
            canvas = Image.new("RGB", (2 * size, 2 * size))
            canvas.paste(_tile(a.path, size), (0, 0))
            canvas.paste(_tile(b.path, size), (size, 0))
            name = f"{split}/{k:05d}.jpg"
            (out / split).mkdir(exist_ok=True)
            canvas.save(out / name, quality=90)
            left, right = a.labels[task][0], b.labels[task][0]
            rows.append((name, split, left, LABEL_SEPARATOR.join(sorted({left, right}))))
    buffer = io.StringIO()
    csv.writer(buffer).writerows([("path", "split", "left", "items"), *rows])
    target = out / "labels.csv"
    atomic_write_text(target, buffer.getvalue())
    return target
