"""What an explanation is: the map, the overlay and the class it explains."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from headstart.data.manifest import DEFAULT_TASK

__all__ = ["Explanation"]


@dataclass(frozen=True)
class Explanation:
    """A class activation map of one image.

    ``heatmap``: float32 (H, W) in [0, 1] at the model's input (crop) resolution.
    ``overlay``: the preprocessed crop of the photo with the heatmap blended in (RGB).
    ``label``/``probability``: the explained class and the model's probability for it.
    ``predicted``/``predicted_probability``: the model's most probable class and its
    probability (equal to ``label``/``probability`` unless another target was asked for).
    ``method``: the CAM method used; ``task``: the task explained.  For a multi-label task the
    probabilities are each label's own (sigmoid) and the map explains that label's score.
    """

    heatmap: np.ndarray
    overlay: Image.Image
    label: str
    probability: float
    predicted: str
    predicted_probability: float
    method: str
    task: str = DEFAULT_TASK
