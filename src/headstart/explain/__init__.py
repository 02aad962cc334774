"""Explanations: where in an image a model looks (Grad-CAM, Grad-CAM++, EigenCAM).

>>> from headstart import load
>>> from headstart.explain import explain, save_overlay
>>> expl = explain(load("runs/x/model"), "photo.jpg", method="gradcam")  # doctest: +SKIP
>>> save_overlay(expl, "photo.cam.png")                                  # doctest: +SKIP

Importing this package is cheap; torch and grad-cam load on the first explanation.
"""

from __future__ import annotations

from headstart.explain.cam import (
    METHODS,
    Explanation,
    ImageInput,
    explain,
    explain_many,
    require_explainable,
)
from headstart.explain.output import overlay_png, save_overlay

__all__ = [
    "METHODS",
    "Explanation",
    "ImageInput",
    "explain",
    "explain_many",
    "overlay_png",
    "require_explainable",
    "save_overlay",
]
