"""The probe strategy for multi-label and multi-task data: one head per task on the cached
embeddings, thresholds tuned on validation, metrics per task, predictions per task."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart.data.manifest import LABEL_SEPARATOR, Manifest, Sample, Task
from headstart.fsutil import atomic_write_text
from headstart.tasks.heads import (
    LabelSetHead,
    fit_task_head,
    indicator,
    task_proba,
    tune_thresholds,
)
from headstart.tasks.metrics import evaluate_task

__all__ = ["evaluate_tasks", "fit_task_heads", "tune_label_thresholds", "write_task_predictions"]

Probabilities = dict[str, dict[str, np.ndarray]]  # split -> task -> (N, C)


def _rows(manifest: Manifest, split: str) -> list[int]:
    return [i for i, s in enumerate(manifest.samples) if s.split == split]


def cells_of(samples: Sequence[Sample], task: str) -> list[tuple[str, ...]]:
    """Each sample's labels of ``task``."""
    return [tuple(s.labels[task]) for s in samples]


def fit_task_heads(
    manifest: Manifest, features: np.ndarray, kind: str, params: Mapping[str, Any]
) -> dict[str, Any]:
    """One head per task, fitted on the training rows of ``features`` (rows follow samples)."""
    train = _rows(manifest, "train")
    samples = [manifest.samples[i] for i in train]
    return {
        task.name: fit_task_head(task, kind, params, features[train], cells_of(samples, task.name))
        for task in manifest.targets
    }


def task_probabilities(
    manifest: Manifest, features: np.ndarray, heads: Mapping[str, Any]
) -> Probabilities:
    """Per evaluated split (val, test) and task, probabilities in the task's class order."""
    out: Probabilities = {}
    for split in ("val", "test"):
        rows = _rows(manifest, split)
        if rows:
            out[split] = {
                t.name: task_proba(heads[t.name], features[rows], t.classes)
                for t in manifest.targets
            }
    return out


def tune_label_thresholds(
    manifest: Manifest, heads: Mapping[str, Any], probabilities: Probabilities
) -> None:
    """Set each multi-label head's thresholds to the F1-best ones on the val split (0.5 stays
    when there is no val split)."""
    if "val" not in probabilities:
        return
    val = manifest.split("val")
    for task in manifest.targets:
        head = heads[task.name]
        if isinstance(head, LabelSetHead):
            Y = indicator(cells_of(val, task.name), task.classes)
            head.thresholds = tune_thresholds(Y, probabilities["val"][task.name])


def evaluate_tasks(
    manifest: Manifest,
    heads: Mapping[str, Any],
    probabilities: Probabilities,
    *,
    n_boot: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """split -> task -> metrics (see :func:`headstart.tasks.evaluate_task`)."""
    return {
        split: {
            t.name: evaluate_task(
                t,
                cells_of(manifest.split(split), t.name),
                per_task[t.name],
                heads[t.name],
                n_boot=n_boot,
                seed=seed,
            )
            for t in manifest.targets
        }
        for split, per_task in probabilities.items()
    }


def _chosen(task: Task, row: np.ndarray, head: Any) -> list[str]:
    if isinstance(head, LabelSetHead):
        return [c for c, p, t in zip(task.classes, row, head.thresholds, strict=True) if p >= t]
    return [task.classes[int(row.argmax())]]


def write_task_predictions(
    path: Path, manifest: Manifest, heads: Mapping[str, Any], probabilities: Probabilities
) -> None:
    """CSV of every evaluated image: path, split, then per task its true labels, predicted
    labels and one ``p:<task>:<class>`` column per class (labels joined with ``|``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = ["path", "split"]
    for t in manifest.targets:
        header += [t.name, f"predicted:{t.name}", *(f"p:{t.name}:{c}" for c in t.classes)]
    writer.writerow(header)
    for split, per_task in probabilities.items():
        for i, sample in enumerate(manifest.split(split)):
            cells = [manifest.relative(sample.path), split]
            for t in manifest.targets:
                row = per_task[t.name][i]
                cells += [
                    LABEL_SEPARATOR.join(sample.labels[t.name]),
                    LABEL_SEPARATOR.join(_chosen(t, row, heads[t.name])),
                    *(f"{v:.6f}" for v in row),
                ]
            writer.writerow(cells)
    atomic_write_text(path, buffer.getvalue())
