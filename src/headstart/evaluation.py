"""``evaluate``: a fitted model against labelled images (a folder or a CSV), and optionally how
well its OOD score tells them from foreign images (AUROC, FPR at 95% TPR)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from headstart.data import Manifest, Sample
from headstart.data.labelled import labelled_split, sample_inputs
from headstart.features.tta import check_tta
from headstart.inputs import expand_inputs, expand_texts
from headstart.model import Model, load
from headstart.stats import OodMetrics, TaskMetrics, ood_metrics

__all__ = ["EvaluationResult", "evaluate_data", "label_columns", "model_split"]


@dataclass
class EvaluationResult:
    """Metrics per task of a model on a labelled folder or CSV, and the files left out."""

    metrics: dict[str, TaskMetrics]
    split: str
    manifest: Manifest
    ood: OodMetrics | None = None
    """With ``ood_data``: the evaluated images (in-distribution) against those (foreign)."""
    ood_failures: dict[Path, str] | None = None
    """With ``ood_data``: its files that could not be read, and why."""


def label_columns(model: Model) -> str | list[str]:
    """The CSV label column(s) the model was trained on (its config's ``data.label_column``)."""
    column: str | list[str] = model.info.get("config", {}).get("data", {}).get("label_column")
    return column or "label"


def model_split(
    model: Model, data: str | Path, split: str | None = None, *, whole_if_unsplit: bool = False
) -> tuple[Manifest, str, list[Sample]]:
    """:func:`~headstart.data.labelled.labelled_split` of ``data`` with the model's tasks,
    label column(s) and (a text model) text column."""
    return labelled_split(
        data,
        model.tasks,
        split,
        whole_if_unsplit=whole_if_unsplit,
        label_column=label_columns(model),
        text_column=model.text_column if model.modality == "text" else None,
    )


def evaluate_data(
    model: Model | str | Path,
    data: str | Path,
    *,
    split: str | None = None,
    n_boot: int = 1000,
    progress: bool = True,
    tta: str = "none",
    ood_data: str | Path | None = None,
) -> EvaluationResult:
    """Evaluate ``model`` on labelled images: every task, with 95% intervals.  A folder with
    split folders is evaluated on ``split`` (default: test, else val); a plain class-folder
    tree or CSV is used whole.  ``tta``: test-time augmentation (see
    :meth:`Model.task_proba`).  ``ood_data``: a folder (or file, or glob) of images unlike the
    training data; its OOD scores against those of the evaluated images give AUROC and FPR at
    95% TPR (the model must have an OOD scorer: ``ConfigError`` otherwise)."""
    check_tta(tta)
    loaded = model if isinstance(model, Model) else load(model)
    if ood_data is not None:
        loaded.require_ood()  # a model without one fails before any image is read
    manifest, split, samples = model_split(loaded, data, split)
    cells = {t.name: [s.labels[t.name] for s in samples] for t in loaded.tasks}
    inputs = sample_inputs(samples)
    metrics, failures = loaded.evaluate(inputs, cells, n_boot=n_boot, progress=progress, tta=tta)
    reasons = {samples[i].path: r for i, r in failures.items()}
    result = EvaluationResult(metrics, split, manifest.without(reasons, reasons))
    if ood_data is None:
        return result
    inside, _ = loaded.ood_scores(inputs, progress=False)
    if loaded.modality == "text":
        rows = expand_texts([ood_data], loaded.text_column)
        sources = [source for source, _, _ in rows]
        outside, unread = loaded.ood_scores([text for _, text, _ in rows], progress=progress)
        threshold = loaded.require_ood().threshold
        result.ood = ood_metrics(inside, outside, threshold=threshold, n_boot=n_boot)
        result.ood_failures = {sources[i]: why for i, why in unread.items()}
        return result
    foreign = expand_inputs([ood_data])
    outside, unread = loaded.ood_scores(foreign, progress=progress)
    threshold = loaded.require_ood().threshold
    result.ood = ood_metrics(inside, outside, threshold=threshold, n_boot=n_boot)
    result.ood_failures = {foreign[i]: why for i, why in unread.items()}
    return result
