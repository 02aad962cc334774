"""``evaluate``: a fitted model against labelled images (a folder or a CSV)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headstart.data import Manifest
from headstart.data.labelled import labelled_split
from headstart.features.tta import check_tta
from headstart.model import Model, load
from headstart.stats import TaskMetrics

__all__ = ["EvaluationResult", "evaluate_data", "label_columns"]


@dataclass
class EvaluationResult:
    """Metrics per task of a model on a labelled folder or CSV, and the files left out."""

    metrics: dict[str, TaskMetrics]
    split: str
    manifest: Manifest


def label_columns(model: Model) -> str | list[str]:
    """The CSV label column(s) the model was trained on (its config's ``data.label_column``)."""
    column: str | list[str] = model.info.get("config", {}).get("data", {}).get("label_column")
    return column or "label"


def evaluate_data(
    model: Model | str | Path,
    data: str | Path,
    *,
    split: str | None = None,
    n_boot: int = 1000,
    progress: bool = True,
    tta: str = "none",
) -> EvaluationResult:
    """Evaluate ``model`` on labelled images: every task, with 95% intervals.  A folder with
    split folders is evaluated on ``split`` (default: test, else val); a plain class-folder
    tree or CSV is used whole.  ``tta``: test-time augmentation (see
    :meth:`Model.task_proba`)."""
    check_tta(tta)
    loaded = model if isinstance(model, Model) else load(model)
    manifest, split, samples = labelled_split(
        data, loaded.tasks, split, label_column=label_columns(loaded)
    )
    cells = {t.name: [s.labels[t.name] for s in samples] for t in loaded.tasks}
    metrics, failures = loaded.evaluate(
        [s.path for s in samples], cells, n_boot=n_boot, progress=progress, tta=tta
    )
    reasons = {samples[i].path: r for i, r in failures.items()}
    return EvaluationResult(metrics, split, manifest.without(reasons, reasons))
