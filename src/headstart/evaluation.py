"""``evaluate``: a fitted model against labelled images (a folder or a CSV)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from headstart.data import Manifest
from headstart.data.labelled import labelled_split
from headstart.errors import DataError
from headstart.evaluate import Metrics
from headstart.features import EmbeddingStore
from headstart.features.tta import check_tta
from headstart.model import Model, load

__all__ = ["EvaluationResult", "evaluate_data"]


@dataclass
class EvaluationResult:
    """Metrics of a model on a labelled folder or CSV, and the files that could not be used."""

    metrics: Metrics | None
    split: str
    manifest: Manifest
    task_metrics: dict[str, Any] = field(default_factory=dict)
    """A multi-label / multi-task model: task -> metrics (``metrics`` is then None)."""


def evaluate_data(
    model: Model | str | Path,
    data: str | Path,
    *,
    split: str | None = None,
    n_boot: int = 1000,
    progress: bool = True,
    tta: str = "none",
) -> EvaluationResult:
    """Evaluate ``model`` on labelled images.  A folder with split folders is evaluated on
    ``split`` (default: test, else val); a plain class-folder tree or CSV is used whole.
    ``tta``: test-time augmentation (see :meth:`Model.predict_proba`)."""
    check_tta(tta)
    loaded = model if isinstance(model, Model) else load(model)
    label_column = loaded.info.get("config", {}).get("data", {}).get("label_column", "label")
    manifest, split, samples = labelled_split(
        data, loaded.classes, split, label_column=label_column
    )
    if not loaded.is_plain:
        if tta != "none":
            loaded.require_plain("test-time augmentation")
        return _evaluate_tasks(loaded, manifest, split, samples, n_boot, progress)
    metrics, failures = loaded.evaluate(
        [s.path for s in samples],
        [s.label for s in samples],
        store=EmbeddingStore(),
        n_boot=n_boot,
        progress=progress,
        tta=tta,
    )
    reasons = {samples[i].path: r for i, r in failures.items()}
    return EvaluationResult(metrics, split, manifest.without(reasons, reasons))


def _evaluate_tasks(
    model: Model,
    manifest: Manifest,
    split: str,
    samples: list[Any],
    n_boot: int,
    progress: bool,
) -> EvaluationResult:
    names = [t.name for t in model.tasks]
    if list(manifest.tasks) != names:
        raise DataError(
            f"the model answers tasks {', '.join(names)}; {manifest.root} has "
            f"{', '.join(manifest.tasks)} (set data.label_column to the model's columns)"
        )
    cells = {t: [tuple(s.labels[t]) for s in samples] for t in names}
    metrics, failures = model.evaluate_tasks(
        [s.path for s in samples],
        cells,
        store=EmbeddingStore(),
        n_boot=n_boot,
        progress=progress,
    )
    reasons = {samples[i].path: r for i, r in failures.items()}
    return EvaluationResult(None, split, manifest.without(reasons, reasons), metrics)
