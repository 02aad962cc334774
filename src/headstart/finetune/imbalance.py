"""The imbalance remedies of a fine-tuning run's tasks: which one each task gets, the class
weights of a weighted loss, and the classes a balanced sampler draws by."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from headstart.config import FitConfig
from headstart.data import Manifest
from headstart.finetune.data import Imbalance, decide_imbalance
from headstart.finetune.targets import task_slices

__all__ = ["balance_on", "class_weights", "task_imbalance"]


def task_imbalance(manifest: Manifest, cfg: FitConfig) -> dict[str, Imbalance]:
    """The remedy of each task: per multi-class task by its class ratio; a balanced sampler
    can balance one task only (the first that asks), so later ones get the weighted loss."""
    out: dict[str, Imbalance] = {}
    sampled = None
    for task in manifest.targets:
        if task.multi_label:
            out[task.name] = Imbalance({}, 1.0, "none", "multi-label: not applied")
            continue
        labels = [s.labels[task.name][0] for s in manifest.split("train")]
        imb = decide_imbalance(
            labels, task.classes, cfg.train.imbalance, cfg.train.imbalance_threshold
        )
        if imb.remedy == "sampler" and sampled is not None:
            why = f"{imb.reason}; the sampler balances '{sampled}', so a weighted loss here"
            imb = Imbalance(imb.counts, imb.ratio, "weighted_loss", why)
        elif imb.remedy == "sampler":
            sampled = task.name
        out[task.name] = imb
    return out


def class_weights(imbalance: dict[str, Imbalance], manifest: Manifest) -> dict[str, torch.Tensor]:
    out = {}
    for task in manifest.targets:
        imb = imbalance[task.name]
        if imb.remedy == "weighted_loss":
            counts = np.array([max(imb.counts[c], 1) for c in task.classes], dtype=np.float64)
            out[task.name] = torch.tensor(
                counts.sum() / (len(counts) * counts), dtype=torch.float32
            )
    return out


def balance_on(
    imbalance: dict[str, Imbalance], manifest: Manifest, unlabelled: Sequence[np.ndarray] = ()
) -> list[int] | None:
    """Each training row's class in the task the sampler balances (an unlabelled image of a
    distillation run: the teacher's most probable class)."""
    for task, cols in zip(manifest.targets, task_slices(manifest.targets), strict=True):
        if imbalance[task.name].remedy == "sampler":
            index = {c: i for i, c in enumerate(task.classes)}
            labelled = [index[s.labels[task.name][0]] for s in manifest.split("train")]
            return labelled + [int(np.argmax(row[cols])) for row in unlabelled]
    return None
