"""``map.html``: one self-contained, offline page to look at an :class:`Exploration`.

A canvas scatter of the images (PCA / t-SNE / UMAP, see :mod:`headstart.explore.projection`),
coloured by given label, predicted label, cluster, outlier score or label-issue score; hovering
a point shows its thumbnail and scores; a box drag (shift adds) or a click selects points, whose
paths can be copied or downloaded as ``paths.txt``.  Below the map: cluster scores, each
cluster's most typical images, the most unusual images and the likely label issues.

No network: the CSS and script are inline (:mod:`headstart.explore.page_assets`, plain canvas and
DOM code), thumbnails are JPEG ``data:`` URIs, and the data is one JSON block in a
``<script type="application/json">`` with ``<``, ``>`` and ``&`` escaped, so no file name can
end the script or inject markup (the script only ever sets ``textContent``).

Sizes: thumbnails (96 px JPEGs, about 2.8 KB of base64 each) are embedded for at most
:data:`MAX_THUMBNAILS` images (all of them up to that many; above it the galleries' images plus a
seeded sample; the others' tooltips say "no thumbnail"), so the file stays under about 10 MB.
Measured with clothing photos and 1280-d features (PCA + t-SNE maps): 300 images -> 0.88 MB,
2,000 -> 5.8 MB, 10,000 -> 9.7 MB (0.07 / 0.26 MB for 300 / 2,000 without thumbnails).  In
headless Chromium the 10,000-point page loads and draws in 1.5 s; recolouring takes 30-80 ms,
switching the projection 45 ms, and a hover redraws only the overlay canvas.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from headstart.data.images import load_rgb
from headstart.errors import ImageError
from headstart.explore.analysis import Exploration
from headstart.explore.page_assets import CSS, SCRIPT
from headstart.explore.projection import METHOD_NAMES, METHODS, Projections, projections
from headstart.fsutil import atomic_write_text

__all__ = ["GALLERY_SIZE", "MAX_THUMBNAILS", "THUMB_SIZE", "map_data", "render", "write_map"]

THUMB_SIZE = 96
"""Thumbnails fit in this many pixels (JPEG, quality 75)."""
MAX_THUMBNAILS = 3000
"""At most this many thumbnails are embedded (about 3 KB each): the galleries' images first,
then a seeded sample; a point without one says so in its tooltip."""
GALLERY_SIZE = 24
"""Images in the outlier and label-issue galleries."""
TYPICAL_SHOWN = 8
"""Most typical images shown per cluster."""


def write_map(
    path: Path,
    exploration: Exploration,
    *,
    thumbnails: bool = True,
    methods: Sequence[str] = METHODS,
    seed: int = 0,
    cache: Path | None = None,
    title: str | None = None,
) -> Path:
    """Write the interactive map of ``exploration`` to ``path`` (atomically) and return it.

    ``methods``: the projections offered (one that cannot run, UMAP without umap-learn, is
    listed with the reason); ``cache``: a folder for cached t-SNE/UMAP coordinates;
    ``thumbnails=False`` writes a small page without images.
    """
    maps = projections(exploration.features, methods, seed, cache=cache)
    payload = map_data(exploration, maps, thumbnails=thumbnails, seed=seed)
    atomic_write_text(path, render(payload, title or _title(exploration)))
    return path


def map_data(
    exploration: Exploration, maps: Projections, *, thumbnails: bool = True, seed: int = 0
) -> dict[str, Any]:
    """Everything the page's script reads, as JSON-ready values (no NaN: missing is None)."""
    ex = exploration
    n = len(ex.paths)
    issue = _scores(ex.label_issue_score) if ex.label_issue_score is not None else None
    outlier = _scores(ex.outlier_score)
    galleries = {
        "outliers": _highest(ex.outlier_score, GALLERY_SIZE),
        "issues": [int(i) for i in ex.label_issues[:GALLERY_SIZE]],
    }
    issues_note = ""
    if ex.label_issue_score is not None and not galleries["issues"]:
        # nothing flagged: the closest calls still say where the labels are least certain
        galleries["issues"] = _highest(ex.label_issue_score, GALLERY_SIZE // 2)
        one = "text" if ex.texts is not None else "image"
        issues_note = f"no {one} was flagged as a likely label error; the highest scores:"
    typical = {
        method: {str(c): [int(i) for i in rows[:TYPICAL_SHOWN]] for c, rows in sorted(per.items())}
        for method, per in ex.typical.items()
    }
    shown = [*galleries["outliers"], *galleries["issues"]]
    shown += [i for per in typical.values() for rows in per.values() for i in rows]
    pictures = thumbnails and ex.texts is None
    thumbs, thumb_note = _thumbnails(ex.paths, shown, seed) if pictures else ([None] * n, "")
    notes = list(ex.notes)
    if thumb_note:
        notes.append(thumb_note)
    return {
        "n": n,
        "root": ex.root.as_posix() if ex.root is not None else None,
        "task": ex.task,
        "paths": [ex.relative(i) for i in range(n)],
        "labels": list(ex.labels),
        "predicted": list(ex.predicted),
        "confidence": [_round(c) for c in ex.confidence],
        "classes": list(ex.classes),
        "outlier": outlier,
        "issue": issue,
        "clusters": {m: [int(c) for c in ids] for m, ids in ex.clusters.items()},
        "metrics": {
            m: {k: _round(v, 4) for k, v in scores.items()}
            for m, scores in ex.cluster_metrics.items()
        },
        "typical": typical,
        "galleries": galleries,
        "issues_note": issues_note,
        "methods": [
            {
                "id": m,
                "name": METHOD_NAMES[m],
                "available": m in maps.coords,
                "note": maps.notes.get(m, ""),
            }
            for m in METHODS
            if m in maps.coords or m in maps.notes
        ],
        "maps": {m: _unit(points) for m, points in maps.coords.items()},
        "thumbs": thumbs,
        "texts": None if ex.texts is None else [_short(t) for t in ex.texts],
        "notes": notes,
    }


def render(payload: dict[str, Any], title: str) -> str:
    """The page: ``payload`` as escaped JSON beside the inline style and script."""
    data = json.dumps(payload, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    # Inside <script> only "</" (and "<!--") can break out; escaping every <, > and & (valid JSON
    # string escapes) rules that out for any file name.  U+2028/9 are escaped for old parsers.
    for raw, escaped in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        data = data.replace(raw, escaped)
    heading = html.escape(title)
    noun = "texts" if payload.get("texts") is not None else "images"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{heading}</title>
<style>{CSS}</style>
</head>
<body>
<header>
  <h1>{heading}</h1>
  <p id="summary"></p>
  <ul id="notes"></ul>
</header>
<main>
  <section class="mapcard">
    <div class="toolbar">
      <label>Map <select id="projection"></select></label>
      <label>Colour by <select id="colour"></select></label>
      <span class="modes" role="group" aria-label="Drag to">
        <button type="button" id="mode-select" class="on">Select</button><button
          type="button" id="mode-pan">Pan</button>
      </span>
      <button type="button" id="reset">Reset view</button>
      <span class="help">Hover a point to see it &middot; drag a box to select (shift adds,
        shift-click toggles) &middot; scroll to zoom</span>
    </div>
    <p id="method-note" class="note"></p>
    <div class="plot" id="plot">
      <canvas id="points"></canvas>
      <canvas id="overlay"></canvas>
      <div id="tooltip" hidden></div>
    </div>
  </section>
  <aside>
    <section class="card"><h2 id="legend-title">Legend</h2><div id="legend"></div></section>
    <section class="card" id="selection">
      <h2>Selection <span id="sel-count">0 {noun}</span></h2>
      <div class="buttons">
        <button type="button" id="copy" disabled>Copy paths</button>
        <button type="button" id="download" disabled>Download paths.txt</button>
        <button type="button" id="clear" disabled>Clear</button>
      </div>
      <p class="note" id="copy-status"></p>
      <ol id="sel-list"></ol>
    </section>
  </aside>
</main>
<section class="panels">
  <section class="card wide" id="clusters-card">
    <h2>Clusters</h2>
    <div id="metrics-card"><div id="metrics"></div></div>
    <div id="typical-card">
      <h3>Most typical {noun} per cluster <select id="typical-method"></select></h3>
      <div id="typical"></div>
    </div>
  </section>
  <section class="card wide" id="outliers-card"><h2>Most unusual {noun}</h2>
    <div class="gallery" id="outliers"></div></section>
  <section class="card wide" id="issues-card"><h2>Possible label issues
    <small>given &rarr; suggested</small></h2><p class="note" id="issues-note"></p>
    <div class="gallery" id="issues"></div></section>
</section>
<script type="application/json" id="hs-data">{data}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _title(exploration: Exploration) -> str:
    where = exploration.root.name if exploration.root is not None else ""
    return "headstart explore" + (f": {where}" if where else "")


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _scores(values: np.ndarray) -> list[float | None]:
    return [_round(float(v)) for v in np.asarray(values, dtype=np.float64)]


def _highest(scores: np.ndarray, k: int) -> list[int]:
    """The rows of the ``k`` highest finite scores, highest first (stable for ties)."""
    values = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-np.nan_to_num(values, nan=-np.inf), kind="stable")
    return [int(i) for i in order if np.isfinite(values[i])][:k]


def _unit(points: np.ndarray) -> list[float]:
    """Points scaled into the unit square (aspect kept, centred), flattened x0, y0, x1, ..."""
    p = np.asarray(points, dtype=np.float64)
    if len(p) == 0:
        return []
    low, high = p.min(axis=0), p.max(axis=0)
    span = float((high - low).max())
    scaled = (p - low) / span if span > 0 else np.zeros_like(p)
    if span > 0:
        scaled += (1.0 - (high - low) / span) / 2  # centre the shorter side
    else:
        scaled += 0.5
    return [round(float(v), 4) for v in scaled.ravel()]


def _thumbnails(
    paths: Sequence[Path], first: Sequence[int], seed: int
) -> tuple[list[str | None], str]:
    """One ``data:`` URI (or None) per row, for at most :data:`MAX_THUMBNAILS` rows: ``first``
    (the galleries) then a seeded sample; and a note when some rows go without."""
    n = len(paths)
    rows = list(dict.fromkeys(int(i) for i in first))
    if n <= MAX_THUMBNAILS:
        rows = list(range(n))
    else:
        others = np.random.default_rng(seed).permutation(n)
        rows = list(dict.fromkeys([*rows, *(int(i) for i in others)]))[:MAX_THUMBNAILS]
    out: list[str | None] = [None] * n
    # Pillow releases the GIL while decoding: a few threads overlap the file reads and decodes.
    with ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool:
        for row, uri in zip(rows, pool.map(lambda i: _thumbnail(paths[i]), rows), strict=True):
            out[row] = uri
    failed = sum(1 for i in rows if out[i] is None)
    notes = []
    if n > MAX_THUMBNAILS:
        notes.append(
            f"thumbnails embedded for {MAX_THUMBNAILS:,} of {n:,} images (the galleries' and a"
            " seeded sample), to keep the page small"
        )
    if failed:
        notes.append(f"{failed:,} images could not be read for a thumbnail")
    return out, "; ".join(notes)


def _thumbnail(path: Path) -> str | None:
    try:
        image = load_rgb(path, draft_size=THUMB_SIZE)
    except ImageError:
        return None
    image.thumbnail((THUMB_SIZE, THUMB_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
