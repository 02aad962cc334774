"""Drawing a class activation map over the photo: matplotlib's ``jet`` colours (the same
piecewise-linear table, without importing matplotlib) blended into the preprocessed crop."""

from __future__ import annotations

import numpy as np
from PIL import Image

from headstart.backbones import Preprocessing

__all__ = ["blend", "crop_rgb", "jet"]

# matplotlib's _jet_data: (x, value) breakpoints of each channel
_JET = {
    "red": ((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
    "green": ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
    "blue": ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)),
}


def jet(values: np.ndarray) -> np.ndarray:
    """(..., 3) RGB in [0, 1] of ``values`` in [0, 1], as ``matplotlib.colormaps["jet"]``
    (which looks the value up in a 256-entry table)."""
    index = np.clip((np.asarray(values, dtype=np.float64) * 256).astype(np.int64), 0, 255)
    grid = np.arange(256) / 255.0
    channels = []
    for name in ("red", "green", "blue"):
        xs = np.array([x for x, _ in _JET[name]])
        ys = np.array([y for _, y in _JET[name]])
        channels.append(np.interp(grid, xs, ys))
    table = np.stack(channels, axis=-1)
    out: np.ndarray = table[index]
    return out


def crop_rgb(x: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """A preprocessed input (3, H, W) back to uint8 RGB (H, W, 3): the pixels the model saw."""
    rgb = np.asarray(x).transpose(1, 2, 0) * np.asarray(preprocessing.std)
    rgb = rgb + np.asarray(preprocessing.mean)
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def blend(rgb: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The photo with the heatmap's jet colours blended in (``alpha`` of colour)."""
    colour = jet(heatmap)[..., :3] * 255.0
    mixed = (1.0 - alpha) * rgb.astype(np.float32) + alpha * colour
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8), "RGB")
