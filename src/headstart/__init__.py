"""headstart: transfer learning on images, offline first.

>>> import headstart
>>> result = headstart.fit("photos/", "runs/photos")      # doctest: +SKIP
>>> model = headstart.load("runs/photos/model")            # doctest: +SKIP
>>> model.predict(["new.jpg"])                             # doctest: +SKIP

Importing ``headstart`` is instant: each name below is imported from its module on first use
(PEP 562), so ``headstart --help`` and scripts that need one piece do not pay for numpy,
scikit-learn or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from headstart.config import FitConfig, load_config
    from headstart.data import Manifest, Task, scan
    from headstart.embedding import EmbeddedData, embed_data
    from headstart.errors import HeadstartError
    from headstart.evaluation import EvaluationResult, evaluate_data
    from headstart.model import Model, Prediction, load
    from headstart.pipeline import fit, resume
    from headstart.result import FitResult

__all__ = [
    "EmbeddedData",
    "EvaluationResult",
    "FitConfig",
    "FitResult",
    "HeadstartError",
    "Manifest",
    "Model",
    "Prediction",
    "Task",
    "embed_data",
    "evaluate_data",
    "fit",
    "load",
    "load_config",
    "resume",
    "scan",
]

__version__ = "0.1.0"

_HOME = {
    "EmbeddedData": "headstart.embedding",
    "EvaluationResult": "headstart.evaluation",
    "FitConfig": "headstart.config",
    "FitResult": "headstart.result",
    "HeadstartError": "headstart.errors",
    "Manifest": "headstart.data",
    "Model": "headstart.model",
    "Prediction": "headstart.model",
    "Task": "headstart.data",
    "embed_data": "headstart.embedding",
    "evaluate_data": "headstart.evaluation",
    "fit": "headstart.pipeline",
    "load": "headstart.model",
    "load_config": "headstart.config",
    "resume": "headstart.pipeline",
    "scan": "headstart.data",
}


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'headstart' has no attribute '{name}'")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
