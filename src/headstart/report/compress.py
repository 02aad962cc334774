"""The compression report (``headstart compress``'s ``OUT/report.html``): every result beside
the original in one table, and accuracy against speed with size as the marker's area, the
Pareto front marked.  Built from the ``compress.json`` document alone."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from headstart.report.svg import INK, MUTED, Axes, canvas, fmt, line, nice_ticks, text
from headstart.report.template import Section, figure, note, page, pct, table

__all__ = ["compress_page", "tradeoff_plot"]

_FRONT = "#0b5cad"


def _mb(size: float) -> str:
    return f"{size / 1e6:.1f}"


def _rows(results: Sequence[Mapping[str, Any]]) -> list[list[object]]:
    base = results[0]
    rows: list[list[object]] = []
    for r in results:
        low, high = r["accuracy_ci"]
        delta = 100 * (r["accuracy"] - base["accuracy"])
        rows.append(
            [
                r["method"],
                f"{pct(r['accuracy'])} [{100 * low:.1f}, {100 * high:.1f}]",
                "" if r is base else f"{delta:+.1f}",
                f"{r['images_per_s']:.1f}",
                f"{r['images_per_s'] / base['images_per_s']:.2f}x",
                _mb(r["size_bytes"]),
                f"{r['size_bytes'] / base['size_bytes']:.2f}x",
                "" if r.get("backbone_bytes") is None else _mb(r["backbone_bytes"]),
                "yes" if r.get("pareto") else "",
                f"{r['seconds']:.0f}" if r is not base else "",
                r["bundle"],
            ]
        )
    return rows


def _xy(ax: Axes, r: Mapping[str, Any]) -> tuple[float, float]:
    return ax.x(math.log10(float(r["images_per_s"]))), ax.y(100 * float(r["accuracy"]))


def tradeoff_plot(results: Sequence[Mapping[str, Any]]) -> str:
    """Accuracy (y) against images/s (x, log scale); each marker's area is proportional to
    the model's size; Pareto-front results are filled and joined, the others hollow."""
    speeds = [float(r["images_per_s"]) for r in results]
    accs = [100 * float(r["accuracy"]) for r in results]
    lo_x, hi_x = math.log10(min(speeds)), math.log10(max(speeds))
    pad_x = max((hi_x - lo_x) * 0.12, 0.05)
    lo_y, hi_y = min(accs), max(accs)
    pad_y = max((hi_y - lo_y) * 0.15, 0.5)
    ax = Axes(62, 30, 460, 300, (lo_x - pad_x, hi_x + pad_x), (lo_y - pad_y, hi_y + pad_y))
    xticks = nice_ticks(10 ** ax.xs[0], 10 ** ax.xs[1], 5)
    body = [text(ax.left + ax.width / 2, 16, "Accuracy against speed (area: size)", bold=True)]
    yticks = [v for v in nice_ticks(*ax.ys, 5) if ax.ys[0] <= v <= ax.ys[1]]
    body += ax.frame(None, yticks, ylabel="accuracy (%)")
    for v in xticks:
        if v > 0 and ax.xs[0] <= math.log10(v) <= ax.xs[1]:
            xx = ax.x(math.log10(v))
            body.append(line(xx, ax.bottom, xx, ax.bottom + 4, INK))
            body.append(text(xx, ax.bottom + 15, f"{v:g}"))
    body.append(text(ax.left + ax.width / 2, ax.bottom + 31, "images/s (log scale)"))
    biggest = max(float(r["size_bytes"]) for r in results)
    front = sorted((r for r in results if r.get("pareto")), key=lambda r: float(r["images_per_s"]))
    if len(front) > 1:
        pts = " ".join("{},{}".format(*map(fmt, _xy(ax, r))) for r in front)
        body.append(
            f'<polyline points="{pts}" fill="none" stroke="{_FRONT}" stroke-dasharray="4 3"/>'
        )
    for r in results:
        x, y = _xy(ax, r)
        radius = 4 + 14 * math.sqrt(float(r["size_bytes"]) / biggest)
        on_front = bool(r.get("pareto"))
        fill = _FRONT if on_front else "none"
        stroke = _FRONT if on_front else MUTED
        body.append(
            f'<circle cx="{fmt(x)}" cy="{fmt(y)}" r="{fmt(radius)}" fill="{fill}" '
            f'fill-opacity="0.35" stroke="{stroke}" stroke-width="1.5"/>'
        )
        body.append(text(x + radius + 3, y + 4, str(r["method"]), anchor="start"))
    body.append(
        text(
            ax.left,
            ax.bottom + 48,
            "filled, joined: the Pareto front; hollow: dominated",
            anchor="start",
            fill=MUTED,
        )
    )
    return canvas(ax.left + ax.width + 140, ax.bottom + 56, "accuracy against images/s", body)


def compress_page(doc: Mapping[str, Any], model: str, data: str) -> str:
    """The whole report page for a ``compress.json`` document."""
    results = list(doc["results"])
    header = [
        "method",
        f"{results[0]['metric']} on {doc['split']} [95% CI]",
        "points",
        "images/s",
        "speed",
        "size (MB)",
        "size",
        "backbone (MB)",
        "Pareto",
        "seconds",
        "bundle",
    ]
    measured = (
        f"{doc['n_images']} {doc['split']} images of {data}; {doc['timing']} on this machine "
        f"({doc['machine']}); size: {doc['size']}. 'speed' and 'size' are relative to the "
        "original; 'seconds' is the time each result took to make."
    )
    sections = [
        Section(
            "results",
            "Results",
            table(header, _rows(results), numeric=(1, 2, 3, 4, 5, 6, 7, 9)) + note(measured),
        ),
        Section("tradeoff", "Trade-off", figure(tradeoff_plot(results))),
    ]
    return page("headstart compress", f"{model} on {data}", sections)
