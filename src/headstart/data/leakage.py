"""Near-duplicate images across splits (leakage): found on embeddings, confirmed on pixels.

Exact copies (same bytes) are already reported by the scan; this finds the copies that differ in
bytes -- resized, re-encoded, slightly cropped or re-shot -- and sit in different splits, where
they make validation and test numbers optimistic.

Thresholds, chosen by looking at real pairs (mobilenet_v2 embeddings):

- embedding cosine >= 0.86 makes a pair a candidate.  Copies lose more than one would think: a
  demo photo resized to 60% scores 0.91, resized + re-encoded + 3-5% cropped 0.88, so a
  threshold such as 0.97 misses them.  Unrelated photos reach 0.85-0.95 too (different T-shirts
  shot on the same sheet in clothing_small), so the embedding alone cannot decide.
- pixels confirm: 32x32 grayscale thumbnails, high-passed (minus a box blur, so the shared
  background and silhouette do not count), correlated under every crop of 0 or 5% per side, best
  match >= 0.87.  Measured: exact copy 1.0, a demo photo resized/re-encoded/5%-cropped 0.88-0.94,
  a re-photographed skirt 0.82, lookalike T-shirts 0.74-0.85, another hat photo 0.12.  The
  margins are thin; both thresholds are parameters.

Texts are confirmed on their characters instead of pixels: the similarity ratio of
:class:`difflib.SequenceMatcher` on the texts lowercased with runs of spaces and punctuation
folded to one space (``"How do I top up?"`` and ``"how do i top-up"`` score 1.0), against the same
threshold; a paraphrase that shares the meaning but not the words is not a copy.
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from headstart.data.images import load_rgb
from headstart.data.manifest import SPLITS, Manifest
from headstart.errors import ConfigError, ImageError
from headstart.fsutil import atomic_write_text, read_entry, write_entry

__all__ = [
    "DEFAULT_PIXEL_THRESHOLD",
    "DEFAULT_THRESHOLD",
    "NearDuplicate",
    "PairCache",
    "check_threshold",
    "dedupe",
    "find_near_duplicates",
    "pixel_similarity",
    "text_similarity",
    "write_near_duplicates",
]

DEFAULT_THRESHOLD = 0.86
DEFAULT_PIXEL_THRESHOLD = 0.87
_THUMB = 32
_OFFSETS = (0.0, 0.05)
_CACHE_VERSION = "v3"  # v3: entries carry their digest


@dataclass(frozen=True)
class NearDuplicate:
    """Two images in different splits that look the same; ``later`` is the one in the later
    split (train < val < test), which ``--dedupe`` removes."""

    earlier: Path
    earlier_split: str
    earlier_label: str
    later: Path
    later_split: str
    later_label: str
    cosine: float
    pixel_correlation: float


def _highpass(image: Image.Image) -> np.ndarray:
    small = image.resize((_THUMB, _THUMB), Image.Resampling.BILINEAR)
    a = np.asarray(small, dtype=np.float64)
    v = (a - np.asarray(small.filter(ImageFilter.BoxBlur(2)), dtype=np.float64)).ravel()
    v -= v.mean()
    norm = np.linalg.norm(v)
    return v / norm if norm > 0 else v


def _crops(path: Path) -> np.ndarray | None:
    """High-passed 32x32 grayscale thumbnails of the image under every crop of 0 or 5% per side
    (row 0: uncropped), so a slightly cropped copy lines up with its original."""
    try:
        image = load_rgb(path, draft_size=4 * _THUMB).convert("L")
    except (ImageError, OSError):
        return None
    image.thumbnail((4 * _THUMB, 4 * _THUMB))
    w, h = image.size
    rows = []
    for left, top, right, bottom in itertools.product(_OFFSETS, repeat=4):
        box = (round(left * w), round(top * h), round(w - right * w), round(h - bottom * h))
        rows.append(_highpass(image.crop(box)))
    return np.stack(rows)


def pixel_similarity(a: Path, b: Path, crops: dict[Path, np.ndarray | None] | None = None) -> float:
    """Best correlation of the two images' high-passed thumbnails over small crops of either
    (1 for a copy; NaN if one cannot be decoded).  ``crops`` memoises each image's thumbnails
    across pairs."""
    memo = crops if crops is not None else {}
    for path in (a, b):
        if path not in memo:
            memo[path] = _crops(path)
    ca, cb = memo[a], memo[b]
    if ca is None or cb is None:
        return float("nan")
    return float(max((ca @ cb[0]).max(), (cb @ ca[0]).max()))


class PairCache:
    """Pixel similarities on disk, keyed by the two files' sha256: refitting the same data (or
    adding images) re-checks no pair it has seen.  ``folder`` None keeps nothing."""

    def __init__(self, folder: Path | None) -> None:
        self.root = folder / _CACHE_VERSION if folder is not None else None

    def _path(self, sha_a: str, sha_b: str) -> Path:
        lo, hi = sorted((sha_a, sha_b))
        assert self.root is not None
        return self.root / lo[:2] / f"{lo}-{hi}"

    def get(self, sha_a: str, sha_b: str) -> float | None:
        if self.root is None:
            return None
        data = read_entry(self._path(sha_a, sha_b))
        try:
            return float(data.decode()) if data is not None else None
        except (UnicodeDecodeError, ValueError):
            return None

    def put(self, sha_a: str, sha_b: str, value: float) -> None:
        if self.root is not None and value == value:  # NaN (undecodable) is not cached
            write_entry(self._path(sha_a, sha_b), repr(value).encode())


def _folded(text: str) -> str:
    return " ".join(re.sub(r"[\W_]+", " ", text.lower()).split())


def text_similarity(a: str, b: str) -> float:
    """How alike two texts are as strings, in [0, 1] (see the module docstring)."""
    return difflib.SequenceMatcher(None, _folded(a), _folded(b), autojunk=False).ratio()


def check_threshold(threshold: float) -> None:
    """One-line :class:`ConfigError` unless ``threshold`` is a cosine in (0, 1]."""
    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"near-duplicate threshold must be in (0, 1], got {threshold}")


def find_near_duplicates(
    manifest: Manifest,
    candidates: Iterable[tuple[int, int, float]],
    *,
    pixel_threshold: float = DEFAULT_PIXEL_THRESHOLD,
    pixel_cache: Path | None = None,
) -> list[NearDuplicate]:
    """The ``candidates`` (sample rows ``i < j`` in different splits and their embedding
    cosine, from the embedding store's :meth:`~headstart.features.EmbeddingStore.cross_pairs`)
    whose thumbnails correlate >= ``pixel_threshold``; exact duplicates (same sha256) are left
    to the scan's report.  Pixel checks are remembered in ``pixel_cache``.  Sorted by cosine,
    highest first."""
    samples = manifest.samples
    order = {name: i for i, name in enumerate(SPLITS)}
    found = []
    crops: dict[Path, np.ndarray | None] = {}
    cache = PairCache(pixel_cache)
    for i, j, cos in candidates:
        a, b = samples[i], samples[j]
        if a.sha256 == b.sha256:
            continue
        if a.text is not None and b.text is not None:
            pixels = text_similarity(a.text, b.text)  # cheap: nothing to cache
        else:
            known = cache.get(a.sha256, b.sha256)
            if known is None:
                known = pixel_similarity(a.path, b.path, crops)
                cache.put(a.sha256, b.sha256, known)
            pixels = known
        if not pixels >= pixel_threshold:
            continue
        if order.get(a.split, 9) > order.get(b.split, 9):
            a, b = b, a
        found.append(
            NearDuplicate(a.path, a.split, a.label_text, b.path, b.split, b.label_text, cos, pixels)
        )
    return sorted(found, key=lambda d: -d.cosine)


def write_near_duplicates(path: Path, manifest: Manifest, pairs: list[NearDuplicate]) -> None:
    """CSV (atomic): one row per pair, paths relative to the data root."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "earlier",
            "earlier_split",
            "earlier_label",
            "later",
            "later_split",
            "later_label",
            "cosine",
            "pixel_correlation",
        ]
    )
    for d in pairs:
        writer.writerow(
            [
                manifest.relative(d.earlier),
                d.earlier_split,
                d.earlier_label,
                manifest.relative(d.later),
                d.later_split,
                d.later_label,
                f"{d.cosine:.4f}",
                f"{d.pixel_correlation:.4f}",
            ]
        )
    atomic_write_text(path, buffer.getvalue())


def dedupe(manifest: Manifest, pairs: list[NearDuplicate]) -> tuple[Manifest, list[int]]:
    """Drop the later member of each near-duplicate pair, and the later copies of exact
    duplicates that sit in several splits, from their (evaluation) split.  Returns the reduced
    manifest (the dropped images recorded as its problems) and the rows of ``manifest`` kept."""
    reasons: dict[Path, str] = {}
    for d in pairs:
        reasons.setdefault(d.later, f"near-duplicate of {manifest.relative(d.earlier)} (--dedupe)")
    order = {name: i for i, name in enumerate(SPLITS)}
    for group in manifest.duplicates:
        if not group.cross_split:
            continue
        first = min(order.get(s, 9) for s in group.splits)
        keep = next(
            p for p, s in zip(group.paths, group.splits, strict=True) if order.get(s, 9) == first
        )
        for p, s in zip(group.paths, group.splits, strict=True):
            if order.get(s, 9) > first:
                reasons.setdefault(p, f"exact duplicate of {manifest.relative(keep)} (--dedupe)")
    present = {s.path for s in manifest.samples}
    reasons = {p: r for p, r in reasons.items() if p in present}
    rows = [i for i, s in enumerate(manifest.samples) if s.path not in reasons]
    if not reasons:
        return manifest, rows
    return manifest.without(reasons, reasons), rows
