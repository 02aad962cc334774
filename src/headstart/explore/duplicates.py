"""Near-duplicate images anywhere in the data (not only across splits, as ``fit`` checks).

The same two-stage test as :mod:`headstart.data.leakage`, with its thresholds and its pixel
check (and its on-disk memo of checked pairs): a pair is a candidate when one image is among
the other's 3 nearest neighbours with cosine >= 0.86, and a near-duplicate when their
high-passed thumbnails correlate >= 0.87.  The neighbours come from the kNN graph explore
computes anyway, so candidates cost nothing extra at any size; the pixel check decodes each
candidate image once, and at most ``max_pairs`` candidates (the most similar) are checked, so
data where every photo looks alike cannot make it run for hours.  Files with the same bytes are
listed as well (pixel correlation 1).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.data.leakage import (
    DEFAULT_PIXEL_THRESHOLD,
    DEFAULT_THRESHOLD,
    PairCache,
    pixel_similarity,
    text_similarity,
)

__all__ = ["MAX_PAIRS", "NearDuplicatePair", "near_duplicates"]

MAX_PAIRS = 5_000
_TOP_K = 3


@dataclass(frozen=True)
class NearDuplicatePair:
    """Rows ``a`` < ``b`` that show the same picture: their embedding ``cosine`` and the
    thumbnails' ``pixel_correlation`` (1.0 for identical bytes; ``exact`` then True)."""

    a: int
    b: int
    cosine: float
    pixel_correlation: float
    exact: bool = False


def near_duplicates(
    paths: Sequence[Path],
    shas: Sequence[str],
    indices: np.ndarray,
    distances: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    pixel_threshold: float = DEFAULT_PIXEL_THRESHOLD,
    pixel_cache: Path | None = None,
    max_pairs: int = MAX_PAIRS,
    texts: Sequence[str] | None = None,
) -> list[NearDuplicatePair]:
    """Pairs of rows that are the same picture, most similar first.  ``indices``/``distances``:
    each row's nearest neighbours (cosine distance, nearest first) from
    :func:`headstart.features.neighbours.knn`; ``shas``: each file's sha256.  ``texts``: each
    row's text (text data), compared by characters instead of pixels."""
    found = _exact_copies(shas)
    seen = {(p.a, p.b) for p in found}
    candidates: dict[tuple[int, int], float] = {}
    k = min(_TOP_K, indices.shape[1])
    for i, j in zip(*np.nonzero(1.0 - distances[:, :k] >= threshold), strict=True):
        a, b = sorted((int(i), int(indices[i, j])))
        if a != b and (a, b) not in seen:
            candidates[(a, b)] = max(candidates.get((a, b), -1.0), 1.0 - float(distances[i, j]))
    ordered = sorted(candidates.items(), key=lambda item: (-item[1], item[0]))[:max_pairs]
    crops: dict[Path, np.ndarray | None] = {}
    cache = PairCache(pixel_cache)
    for (a, b), cosine in ordered:
        if texts is not None:
            pixels: float | None = text_similarity(texts[a], texts[b])
        else:
            pixels = cache.get(shas[a], shas[b])
        if pixels is None:
            pixels = pixel_similarity(paths[a], paths[b], crops)
            cache.put(shas[a], shas[b], pixels)
        if pixels >= pixel_threshold:
            found.append(NearDuplicatePair(a, b, cosine, pixels))
    return sorted(found, key=lambda p: (not p.exact, -p.cosine, p.a, p.b))


def _exact_copies(shas: Sequence[str]) -> list[NearDuplicatePair]:
    """Each file with the same bytes as an earlier row, paired with the first such row."""
    groups: dict[str, list[int]] = defaultdict(list)
    for row, sha in enumerate(shas):
        if sha:
            groups[sha].append(row)
    return [
        NearDuplicatePair(rows[0], other, 1.0, 1.0, exact=True)
        for rows in groups.values()
        for other in rows[1:]
    ]
