"""The report's charts as inline SVG markup (see :mod:`headstart.report.svg`), and image
thumbnails as JPEG ``data:`` URIs.

Each chart keeps what the matplotlib PNGs showed (every count, title and axis), as text.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING

import numpy as np

from headstart.report.svg import (
    INK,
    Axes,
    canvas,
    fmt,
    legend,
    line,
    nice_ticks,
    rect,
    short,
    text,
    text_width,
    tick_label,
)
from headstart.stats import ReliabilityBins

if TYPE_CHECKING:
    from PIL.Image import Image

__all__ = [
    "class_balance",
    "confusion_matrix",
    "embedding_map",
    "image_uri",
    "palette",
    "reliability_diagram",
    "training_curves",
]

_SPLIT_COLOURS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}
_OTHER_SPLIT = "#8172b3"
# matplotlib's tab10 and tab20 category colours
_TAB10 = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")  # fmt: skip
_TAB20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728",
          "#ff9896", "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2",
          "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d", "#17becf", "#9edae5")  # fmt: skip
_DASHED = ' stroke-dasharray="4 3"'
# matplotlib's "Blues" at nine evenly spaced stops, interpolated linearly
_BLUES = np.array(
    [
        [247, 251, 255],
        [222, 235, 247],
        [198, 219, 239],
        [158, 202, 225],
        [107, 174, 214],
        [66, 146, 198],
        [33, 113, 181],
        [8, 81, 156],
        [8, 48, 107],
    ],
    dtype=float,
)


def image_uri(image: Image, size: int = 160, quality: int = 80) -> str:
    """A PIL image shrunk to fit ``size`` pixels, as a JPEG ``data:`` URI."""
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def palette(n: int) -> list[str]:
    """``n`` distinct category colours (tab10, tab20 above ten; repeating beyond twenty)."""
    colours = _TAB20 if n > 10 else _TAB10
    return [colours[i % len(colours)] for i in range(n)]


def _blue(share: float) -> str:
    pos = min(max(share, 0.0), 1.0) * (len(_BLUES) - 1)
    i = min(int(pos), len(_BLUES) - 2)
    rgb = _BLUES[i] + (pos - i) * (_BLUES[i + 1] - _BLUES[i])
    return "#{:02x}{:02x}{:02x}".format(*(round(float(c)) for c in rgb))


def _x_labels(
    centres: Sequence[float], labels: Sequence[str], y: float, slot: float
) -> tuple[list[str], float]:
    """Category names under an axis (``slot`` pixels apart), tilted when one would not fit
    level; returns (markup, height)."""
    rotate = any(text_width(short(s)) > slot - 4 for s in labels)
    out = []
    for x, label in zip(centres, labels, strict=True):
        name = short(label)
        if rotate:
            out.append(text(x + 3, y + 8, name, anchor="end", rotate=-40, tip=label))
        else:
            out.append(text(x, y + 12, name, tip=label))
    tallest = max((text_width(short(s)) for s in labels), default=0.0)
    return out, (tallest * 0.65 + 14 if rotate else 18)


def class_balance(
    counts: Mapping[str, Mapping[str, int]], classes: Sequence[str], noun: str = "images"
) -> str:
    """Stacked bars: samples (``noun``) per class, one colour per split.
    ``counts[split][class]``."""
    k = max(1, len(classes))
    slot = 34.0 if k <= 20 else max(8.0, 680.0 / k)
    totals = [sum(per.get(c, 0) for per in counts.values()) for c in classes]
    ticks = nice_ticks(0, max(totals, default=0) or 1)
    # room for the tick labels, and for the first class name when it is tilted to the left
    first = text_width(short(classes[0])) * 0.77 - slot / 2 + 6 if classes else 0.0
    left = max(14 + text_width(tick_label(ticks[-1])) + 22, first)
    ax = Axes(left, 10, slot * k, 170, (0, k), (0, ticks[-1]))
    body = ax.frame(None, ticks, ylabel=noun)
    bottom = np.zeros(len(classes))
    for split, per_class in counts.items():
        colour = _SPLIT_COLOURS.get(split, _OTHER_SPLIT)
        for i, c in enumerate(classes):
            n = per_class.get(c, 0)
            if n:
                y0, y1 = ax.y(bottom[i] + n), ax.y(bottom[i])
                tip = f"{c} · {split}: {n}"
                body.append(rect(ax.x(i + 0.12), y0, slot * 0.76, y1 - y0, colour, tip=tip))
                bottom[i] += n
    centres = [ax.x(i + 0.5) for i in range(len(classes))]
    labels, height = _x_labels(centres, classes, ax.bottom, slot)
    body += labels
    swatches = [(rect(0, -5, 10, 10, _SPLIT_COLOURS.get(s, _OTHER_SPLIT)), s) for s in counts]
    body.append(legend(ax.left + ax.width + 16, ax.top + 6, swatches))
    width = ax.left + ax.width + 16 + 80
    caption = f"class balance: {noun} per class and split"
    return canvas(width, ax.bottom + height + 4, caption, body)


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> str:
    """Heatmap of counts (rows: true class, columns: predicted), every non-zero cell annotated."""
    m = np.asarray(matrix, dtype=float).reshape(len(classes), len(classes))
    k = max(1, len(classes))
    cell = min(36.0, max(16.0, 380.0 / k))
    left = 22 + max((text_width(short(c)) for c in classes), default=0) + 8
    top = 24.0
    # colour by row share, so a small class's errors show as clearly as a big one's
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    font = min(11.0, cell * 0.42)
    half_title = text_width(title) / 2 + 4
    body = [text(max(left + cell * k / 2, half_title), 15, title, bold=True)]
    # the empty cells are one rectangle: 77 classes have 5,929 cells, mostly empty, and one
    # element (with its title) each made the page megabytes
    body.append(rect(left, top, cell * k, cell * k, _blue(0.0), tip="empty cells: 0"))
    for i, true in enumerate(classes):
        y = top + i * cell
        body.append(text(left - 6, y + cell / 2 + 4, short(true), anchor="end", tip=true))
        for j, predicted in enumerate(classes):
            n = int(m[i, j])
            if n:
                tip = f"true {true}, predicted {predicted}: {n} ({share[i, j]:.0%} of {true})"
                body.append(rect(left + j * cell, y, cell, cell, _blue(share[i, j]), tip=tip))
                colour = "#ffffff" if share[i, j] > 0.55 else INK
                cx, cy = left + (j + 0.5) * cell, y + cell / 2 + font * 0.36
                body.append(text(cx, cy, str(n), size=font, fill=colour))
    bottom = top + cell * k
    body.append(
        f'<rect x="{fmt(left)}" y="{fmt(top)}" width="{fmt(cell * k)}" height="{fmt(cell * k)}" '
        f'fill="none" stroke="{INK}" stroke-width="0.8"/>'
    )
    labels, height = _x_labels([left + (j + 0.5) * cell for j in range(k)], classes, bottom, cell)
    body += labels
    body.append(text(left + cell * k / 2, bottom + height + 14, "predicted"))
    body.append(text(12, top + cell * k / 2, "true", rotate=-90))
    width = max(left + cell * k + 12, 2 * half_title)
    return canvas(width, bottom + height + 20, title, body)


def reliability_diagram(
    bins: Mapping[str, tuple[ReliabilityBins, float]], noun: str = "images"
) -> str:
    """Accuracy against confidence per bin, one panel per split, with its ECE in the title."""
    panel = 262.0
    body: list[str] = []
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    for p, (split, (b, ece)) in enumerate(bins.items()):
        ax = Axes(p * panel + 50, 26, 190, 190, (0, 1), (0, 1))
        title = f"{split}: ECE {ece:.3f} (n={int(b.count.sum())})"
        body.append(text(ax.left + ax.width / 2, 16, title, bold=True))
        body += ax.frame(
            ticks, ticks, xlabel="confidence (top-1 probability)", ylabel="accuracy", box=True
        )
        for i in np.flatnonzero(b.count > 0):
            lo, hi = float(b.edges[i]), float(b.edges[i + 1])
            pad = (hi - lo) * 0.05
            acc = float(b.accuracy[i])
            x0, x1, y0 = ax.x(lo + pad), ax.x(hi - pad), ax.y(acc)
            tip = (
                f"confidence {lo:.2f}-{hi:.2f}: accuracy {acc:.2f}, mean confidence "
                f"{float(b.confidence[i]):.2f}, {int(b.count[i])} {noun}"
            )
            body.append(rect(x0, y0, x1 - x0, ax.bottom - y0, "#4c72b0", tip=tip))
        body.append(line(ax.x(0), ax.y(0), ax.x(1), ax.y(1), "#808080", _DASHED))
        for i in np.flatnonzero(b.count > 0):
            cx, cy = ax.x(float(b.confidence[i])), ax.y(float(b.accuracy[i]))
            body.append(f'<circle cx="{fmt(cx)}" cy="{fmt(cy)}" r="2.5" fill="#dd8452"/>')
    # one legend right of the panels: inside, it would hide the low-confidence bars
    entries = [
        (rect(1, -4, 10, 8, "#4c72b0"), "accuracy"),
        ('<circle cx="6" cy="0" r="2.5" fill="#dd8452"/>', "mean confidence"),
        (line(0, 0, 12, 0, "#808080", _DASHED), "perfect calibration"),
    ]
    n = max(1, len(bins))
    body.append(legend(n * panel + 4, 34, entries))
    return canvas(n * panel + 140, 26 + 190 + 40, "reliability diagram", body)


def training_curves(epochs: Sequence[float], series: Mapping[str, Sequence[float]]) -> str:
    """Loss curves (left) and validation accuracy (right) over epochs; NaN points are skipped."""
    x = np.asarray(epochs, dtype=float)
    colours = dict(zip(series, palette(len(series)), strict=True))
    body: list[str] = []
    for p, (kind, names) in enumerate(
        (
            ("loss", [n for n in series if "acc" not in n]),
            ("accuracy", [n for n in series if "acc" in n]),
        )
    ):
        arrays = [np.asarray(series[n], dtype=float) for n in names]
        values = np.concatenate(arrays) if arrays else np.zeros(0)
        values = values[~np.isnan(values)]
        yticks = nice_ticks(float(values.min()), float(values.max())) if len(values) else [0, 1]
        xticks = nice_ticks(float(x.min()), float(x.max())) if len(x) else [0.0, 1.0]
        xticks = [t for t in xticks if len(x) and x.min() <= t <= x.max()] or xticks
        xs = (float(x.min()), float(x.max())) if len(x) else (0.0, 1.0)
        ax = Axes(p * 330 + 56, 10, 250, 170, xs, (yticks[0], yticks[-1]))
        body += ax.frame(xticks, yticks, xlabel="epoch", ylabel=kind)
        entries = []
        for name in names:
            y = np.asarray(series[name], dtype=float)
            ok = ~np.isnan(y)
            pts = [(ax.x(a), ax.y(b)) for a, b in zip(x[ok], y[ok], strict=True)]
            colour = colours[name]
            path = " ".join(f"{fmt(px)},{fmt(py)}" for px, py in pts)
            body.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
            body += [
                f'<circle cx="{fmt(px)}" cy="{fmt(py)}" r="2.5" fill="{colour}"/>' for px, py in pts
            ]
            entries.append((line(0, 0, 12, 0, colour, ' stroke-width="2"'), name))
        body.append(legend(ax.left + ax.width - 100, ax.top + 8, entries))
    return canvas(660, 10 + 170 + 40, "training curves", body)


def embedding_map(
    points: np.ndarray,
    labels: Sequence[str],
    splits: Sequence[str],
    classes: Sequence[str],
    title: str,
    *,
    tips: Sequence[str] | None = None,
    noun: str = "images",
) -> str:
    """Scatter of 2-D points coloured by class; held-out samples drawn as crosses.  ``tips``:
    one hover title per point (a text run: the text), escaped."""
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    lo, hi = (pts.min(axis=0), pts.max(axis=0)) if len(pts) else (np.zeros(2), np.ones(2))
    pad = (hi - lo) * 0.04 + 1e-9
    ax = Axes(8, 24, 470, 350, (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1]))
    body = [text(ax.left + ax.width / 2, 15, title, bold=True)]
    body.append(
        f'<rect x="{fmt(ax.left)}" y="{fmt(ax.top)}" width="{fmt(ax.width)}" '
        f'height="{fmt(ax.height)}" fill="none" stroke="{INK}" stroke-width="0.8"/>'
    )
    labels_arr = np.asarray(labels)
    held_out = np.asarray([s != "train" for s in splits], dtype=bool)
    colours = palette(len(classes))
    entries = []
    for cls, colour in zip(classes, colours, strict=True):
        mine = labels_arr == cls
        if tips is not None:
            body += _tipped(pts, tips, mine & ~held_out, mine & held_out, colour, ax)
            entries.append((f'<circle cx="5" cy="0" r="4" fill="{colour}"/>', cls))
            continue
        train = pts[mine & ~held_out]
        held = pts[mine & held_out]
        if len(train):
            dots = "".join(
                f'<circle cx="{fmt(ax.x(a))}" cy="{fmt(ax.y(b))}" r="2.4"/>' for a, b in train
            )
            body.append(f'<g fill="{colour}" fill-opacity="0.8">{dots}</g>')
        if len(held):
            crosses = "".join(
                f"M{fmt(ax.x(a) - 2.8)} {fmt(ax.y(b) - 2.8)}l5.6 5.6m0-5.6l-5.6 5.6"
                for a, b in held
            )
            body.append(f'<path d="{crosses}" stroke="{colour}" stroke-width="1.4" fill="none"/>')
        entries.append((f'<circle cx="5" cy="0" r="4" fill="{colour}"/>', cls))
    body.append(legend(ax.left + ax.width + 14, ax.top + 10, entries, row=14))
    longest = max((text_width(short(c, 22)) for c in classes), default=0)
    height = max(ax.bottom + 6, ax.top + 10 + 14 * len(classes) + 6)
    width = ax.left + ax.width + 14 + 16 + longest + 8
    caption = f"{title}: {len(pts)} {noun}; dots: train, crosses: held out"
    return canvas(width, height, caption, body)


def _tipped(
    pts: np.ndarray,
    tips: Sequence[str],
    train: np.ndarray,
    held: np.ndarray,
    colour: str,
    ax: Axes,
) -> list[str]:
    """One class's points, each its own element with a hover ``<title>``."""
    marks = [
        f'<circle cx="{fmt(ax.x(pts[i, 0]))}" cy="{fmt(ax.y(pts[i, 1]))}" r="2.4">'
        f"<title>{escape(tips[i])}</title></circle>"
        for i in np.flatnonzero(train).tolist()
    ]
    crosses = [
        f'<path d="M{fmt(ax.x(pts[i, 0]) - 2.8)} {fmt(ax.y(pts[i, 1]) - 2.8)}l5.6 5.6m0-5.6'
        f'l-5.6 5.6"><title>{escape(tips[i])}</title></path>'
        for i in np.flatnonzero(held).tolist()
    ]
    out = []
    if marks:
        out.append(f'<g fill="{colour}" fill-opacity="0.8">{"".join(marks)}</g>')
    if crosses:
        out.append(f'<g stroke="{colour}" stroke-width="1.4" fill="none">{"".join(crosses)}</g>')
    return out
