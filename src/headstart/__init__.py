"""headstart: transfer learning on images, offline first.

>>> import headstart
>>> result = headstart.fit("photos/", "runs/photos")      # doctest: +SKIP
>>> model = headstart.load("runs/photos/model")            # doctest: +SKIP
>>> model.predict(["new.jpg"])                             # doctest: +SKIP
"""

from __future__ import annotations

from headstart.config import FitConfig, load_config
from headstart.data import Manifest, scan
from headstart.errors import HeadstartError
from headstart.evaluation import EvaluationResult, evaluate_data
from headstart.model import Model, Prediction, load
from headstart.pipeline import EmbeddedData, FitResult, embed_data, fit

__all__ = [
    "EmbeddedData",
    "EvaluationResult",
    "FitConfig",
    "FitResult",
    "HeadstartError",
    "Manifest",
    "Model",
    "Prediction",
    "embed_data",
    "evaluate_data",
    "fit",
    "load",
    "load_config",
    "scan",
]

__version__ = "0.1.0"
