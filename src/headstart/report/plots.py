"""The report's figures, drawn with matplotlib (Agg) and returned as PNG ``data:`` URIs.

Figures are small (modest DPI, few colours) so that a whole report stays a few hundred KB.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.stats import ReliabilityBins

if TYPE_CHECKING:
    from matplotlib.figure import Figure
    from PIL.Image import Image

__all__ = [
    "class_balance",
    "confusion_matrix",
    "embedding_map",
    "image_uri",
    "png_uri",
    "reliability_diagram",
    "training_curves",
]

DPI = 80
_SPLIT_COLOURS = {"train": "#4c72b0", "val": "#dd8452", "test": "#55a868"}


def _figure(width: float, height: float) -> Figure:
    # the object-oriented API with no pyplot: no global state, no GUI backend, thread-safe
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def png_uri(fig: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_uri(image: Image, size: int = 160, quality: int = 80) -> str:
    """A PIL image shrunk to fit ``size`` pixels, as a JPEG ``data:`` URI."""
    thumb = image.convert("RGB")
    thumb.thumbnail((size, size))
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def class_balance(counts: Mapping[str, Mapping[str, int]], classes: Sequence[str]) -> str:
    """Stacked bars: images per class, one colour per split. ``counts[split][class]``."""
    fig = _figure(max(4.0, 0.55 * len(classes) + 1.5), 2.8)
    ax = fig.add_subplot()
    x = np.arange(len(classes))
    bottom = np.zeros(len(classes))
    for split, per_class in counts.items():
        values = np.array([per_class.get(c, 0) for c in classes], dtype=float)
        ax.bar(x, values, bottom=bottom, label=split, color=_SPLIT_COLOURS.get(split))
        bottom += values
    ax.set_xticks(x, list(classes), rotation=45 if len(classes) > 5 else 0, ha="right")
    ax.set_ylabel("images")
    ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.spines[["top", "right"]].set_visible(False)
    return png_uri(fig)


def confusion_matrix(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> str:
    """Heatmap of counts (rows: true class, columns: predicted), every cell annotated."""
    m = np.asarray(matrix, dtype=float)
    k = len(classes)
    side = max(3.2, 0.42 * k + 1.6)
    fig = _figure(side, side * 0.9)
    ax = fig.add_subplot()
    # colour by row share, so a small class's errors show as clearly as a big one's
    share = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                colour = "white" if share[i, j] > 0.55 else "black"
                ax.text(
                    j,
                    i,
                    f"{int(m[i, j])}",
                    ha="center",
                    va="center",
                    color=colour,
                    fontsize="small",
                )
    ax.set_xticks(range(k), list(classes), rotation=45 if k > 4 else 0, ha="right")
    ax.set_yticks(range(k), list(classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize="medium")
    return png_uri(fig)


def reliability_diagram(bins: Mapping[str, tuple[ReliabilityBins, float]]) -> str:
    """Accuracy against confidence per bin, one panel per split, with its ECE in the title."""
    fig = _figure(3.3 * max(1, len(bins)), 3.2)
    axes = fig.subplots(1, max(1, len(bins)), squeeze=False)[0]
    for ax, (split, (b, ece)) in zip(axes, bins.items(), strict=False):
        centres = (b.edges[:-1] + b.edges[1:]) / 2
        width = np.diff(b.edges)
        used = b.count > 0
        ax.bar(
            centres[used],
            b.accuracy[used],
            width=width[used] * 0.9,
            color="#4c72b0",
            label="accuracy",
        )
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1, label="perfect calibration")
        ax.plot(b.confidence[used], b.accuracy[used], "o", color="#dd8452", markersize=3)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{split}: ECE {ece:.3f} (n={int(b.count.sum())})", fontsize="medium")
        ax.legend(frameon=False, fontsize="x-small", loc="upper left")
    return png_uri(fig)


def training_curves(epochs: Sequence[float], series: Mapping[str, Sequence[float]]) -> str:
    """Loss curves (left) and validation accuracy (right) over epochs; NaN points are skipped."""
    fig = _figure(7.0, 2.8)
    loss_ax, acc_ax = fig.subplots(1, 2)
    x = np.asarray(epochs, dtype=float)
    for name, values in series.items():
        y = np.asarray(values, dtype=float)
        ok = ~np.isnan(y)
        ax = acc_ax if "acc" in name else loss_ax
        ax.plot(x[ok], y[ok], marker="o", markersize=3, label=name)
    for ax, label in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.spines[["top", "right"]].set_visible(False)
        if ax.lines:
            ax.legend(frameon=False, fontsize="small")
    return png_uri(fig)


def embedding_map(
    points: np.ndarray,
    labels: Sequence[str],
    splits: Sequence[str],
    classes: Sequence[str],
    title: str,
) -> str:
    """Scatter of 2-D points coloured by class; held-out images drawn as crosses."""
    from matplotlib import colormaps

    fig = _figure(6.4, 4.6)
    ax = fig.add_subplot()
    cmap = colormaps["tab20" if len(classes) > 10 else "tab10"]
    labels_arr = np.asarray(labels)
    held_out = np.asarray([s != "train" for s in splits])
    for i, cls in enumerate(classes):
        colour: Any = cmap(i % cmap.N)
        mine = labels_arr == cls
        train, held = points[mine & ~held_out], points[mine & held_out]
        ax.scatter(train[:, 0], train[:, 1], s=12, color=colour, label=cls, alpha=0.8)
        ax.scatter(held[:, 0], held[:, 1], s=18, color=colour, marker="x", alpha=0.9)
    ax.set_title(title, fontsize="medium")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(
        frameon=False,
        fontsize="x-small",
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        markerscale=1.5,
    )
    return png_uri(fig)
