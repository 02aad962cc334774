"""Inline SVG primitives for the report's charts: a canvas, text, ticks and axes.

Charts are SVG markup written straight into the page: no plotting library to import (importing
matplotlib alone took 0.5-2.5 s on the project's 2-core machines, measured), text that stays
text (searchable, copyable, sharp when printed), and a few KB per chart.  Every value that
reaches the markup is escaped.  No ``xmlns``: inline ``<svg>`` in HTML needs none, and the page
must not mention any URL.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

__all__ = [
    "INK",
    "MUTED",
    "Axes",
    "canvas",
    "fmt",
    "legend",
    "line",
    "nice_ticks",
    "rect",
    "short",
    "text",
    "text_width",
    "tick_label",
]

INK = "#1f2328"
MUTED = "#656d76"
GRID = "#e6e9ec"
CHAR_WIDTH = 6.3
"""Rough width of one 11 px character: enough to leave room for labels (no text metrics)."""


def fmt(value: float) -> str:
    """A coordinate with at most one decimal (smaller markup, no visible difference)."""
    rounded = round(float(value), 1)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:.1f}"


def short(label: str, limit: int = 18) -> str:
    """``label`` cut to ``limit`` characters with an ellipsis (the full name goes in titles)."""
    return label if len(label) <= limit else label[: limit - 1] + "\u2026"


def text_width(label: str, size: float = 11) -> float:
    """Estimated rendered width of ``label`` in pixels."""
    return len(label) * CHAR_WIDTH * size / 11


def canvas(width: float, height: float, label: str, body: Iterable[str]) -> str:
    """The ``<svg>`` element: ``label`` is its accessible name and hover title."""
    w, h = fmt(math.ceil(width)), fmt(math.ceil(height))
    return (
        f'<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
        f'aria-label="{escape(label)}" font-family="system-ui, sans-serif" font-size="11" '
        f'fill="{INK}"><title>{escape(label)}</title>{"".join(body)}</svg>'
    )


def text(
    x: float,
    y: float,
    value: str,
    *,
    anchor: str = "middle",
    size: float | None = None,
    fill: str | None = None,
    rotate: float | None = None,
    bold: bool = False,
    tip: str | None = None,
) -> str:
    """A text node at (x, y) (baseline ``y``); ``rotate`` degrees about its anchor point."""
    attrs = [f'x="{fmt(x)}" y="{fmt(y)}"']
    if anchor != "start":
        attrs.append(f'text-anchor="{anchor}"')
    if size is not None:
        attrs.append(f'font-size="{fmt(size)}"')
    if fill is not None:
        attrs.append(f'fill="{fill}"')
    if bold:
        attrs.append('font-weight="600"')
    if rotate is not None:
        attrs.append(f'transform="rotate({fmt(rotate)} {fmt(x)} {fmt(y)})"')
    title = f"<title>{escape(tip)}</title>" if tip else ""
    return f"<text {' '.join(attrs)}>{title}{escape(value)}</text>"


def rect(
    x: float, y: float, w: float, h: float, fill: str, *, tip: str | None = None, extra: str = ""
) -> str:
    """A filled rectangle, with an optional hover title."""
    body = f'x="{fmt(x)}" y="{fmt(y)}" width="{fmt(w)}" height="{fmt(h)}" fill="{fill}"{extra}'
    if tip:
        return f"<rect {body}><title>{escape(tip)}</title></rect>"
    return f"<rect {body}/>"


def line(x1: float, y1: float, x2: float, y2: float, stroke: str, extra: str = "") -> str:
    return (
        f'<line x1="{fmt(x1)}" y1="{fmt(y1)}" x2="{fmt(x2)}" y2="{fmt(y2)}" '
        f'stroke="{stroke}"{extra}/>'
    )


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values covering [low, high] (1, 2, 2.5 or 5 times 10^k)."""
    if not math.isfinite(low) or not math.isfinite(high):
        return [0.0, 1.0]
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(1, count)
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.floor(low / step + 1e-9) * step
    ticks = []
    value = start
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def tick_label(value: float) -> str:
    return f"{value:g}"


@dataclass(frozen=True)
class Axes:
    """A plot area at (left, top) of size (width, height) showing data ranges ``xs`` x ``ys``."""

    left: float
    top: float
    width: float
    height: float
    xs: tuple[float, float]
    ys: tuple[float, float]

    def x(self, value: float) -> float:
        lo, hi = self.xs
        return self.left + (value - lo) / ((hi - lo) or 1.0) * self.width

    def y(self, value: float) -> float:
        lo, hi = self.ys
        return self.top + self.height - (value - lo) / ((hi - lo) or 1.0) * self.height

    @property
    def bottom(self) -> float:
        return self.top + self.height

    def frame(
        self,
        xticks: Sequence[float] | None,
        yticks: Sequence[float],
        *,
        xlabel: str = "",
        ylabel: str = "",
        grid: bool = True,
        box: bool = False,
    ) -> list[str]:
        """Axis lines (or a full ``box``), ticks with labels, light horizontal grid lines and
        the axis titles."""
        out = []
        for v in yticks:
            yy = self.y(v)
            if grid:
                out.append(line(self.left, yy, self.left + self.width, yy, GRID))
            out.append(line(self.left - 4, yy, self.left, yy, INK))
            out.append(text(self.left - 6, yy + 4, tick_label(v), anchor="end"))
        for v in xticks or ():
            xx = self.x(v)
            out.append(line(xx, self.bottom, xx, self.bottom + 4, INK))
            out.append(text(xx, self.bottom + 15, tick_label(v)))
        if box:
            out.append(
                f'<rect x="{fmt(self.left)}" y="{fmt(self.top)}" width="{fmt(self.width)}" '
                f'height="{fmt(self.height)}" fill="none" stroke="{INK}"/>'
            )
        else:
            out.append(line(self.left, self.top, self.left, self.bottom, INK))
            out.append(line(self.left, self.bottom, self.left + self.width, self.bottom, INK))
        if xlabel:
            out.append(text(self.left + self.width / 2, self.bottom + 31, xlabel))
        if ylabel:
            yy = self.top + self.height / 2
            widest = max((text_width(tick_label(v)) for v in yticks), default=0.0)
            out.append(text(self.left - widest - 15, yy, ylabel, rotate=-90))
        return out


def legend(x: float, y: float, entries: Sequence[tuple[str, str]], *, row: float = 15) -> str:
    """Legend rows at (x, y): each ``(swatch markup at 0,0, label)``, label right of it."""
    out = []
    for i, (swatch, label) in enumerate(entries):
        yy = y + i * row
        out.append(f'<g transform="translate({fmt(x)} {fmt(yy)})">{swatch}</g>')
        out.append(text(x + 16, yy + 4, short(label, 22), anchor="start", tip=label))
    return "".join(out)
