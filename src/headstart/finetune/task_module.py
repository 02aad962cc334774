"""Fine-tuning for multi-label and multi-task data: one shared backbone, one head per task.

The heads are slices of one ``Linear`` over the pooled features (a block of output rows per
task, mathematically the same as separate layers, and one matrix product).  Each sample's target
is the concatenation of its tasks' targets: a one-hot row for a multi-class task (cross-entropy
on its slice, softmax at prediction) and a 0/1 row for a multi-label task (binary cross-entropy,
sigmoid).  The loss is the weighted sum over tasks (``train.task_weights``, default 1 each).

The validation score that early stopping and the best checkpoint follow (logged as ``val_acc``)
is the mean over tasks of accuracy (multi-class) and per-image F1 at threshold 0.5
(multi-label); the per-label thresholds are tuned on validation after training.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from headstart.backbones.model import Backbone
from headstart.config import TrainConfig
from headstart.data.manifest import Task
from headstart.errors import ConfigError
from headstart.finetune.module import FinetuneModule

__all__ = ["TaskFinetuneModule", "task_slices", "task_targets"]


def task_slices(tasks: Sequence[Task]) -> list[slice]:
    """The output columns of each task in the concatenated logits."""
    out, start = [], 0
    for task in tasks:
        out.append(slice(start, start + len(task.classes)))
        start += len(task.classes)
    return out


def task_targets(tasks: Sequence[Task], labels: Mapping[str, Sequence[str]]) -> list[float]:
    """One sample's concatenated target row (one-hot per multi-class task, 0/1 per label)."""
    row: list[float] = []
    for task in tasks:
        present = set(labels[task.name])
        row += [1.0 if c in present else 0.0 for c in task.classes]
    return row


class TaskFinetuneModule(FinetuneModule):
    """:class:`FinetuneModule` with a head per task and the summed per-task loss."""

    def __init__(
        self,
        backbone: Backbone,
        tasks: Sequence[Task],
        config: TrainConfig,
        *,
        seed: int = 0,
    ) -> None:
        weights = dict(config.task_weights)
        unknown = sorted(set(weights) - {t.name for t in tasks})
        if unknown:
            raise ConfigError(
                f"train.task_weights names unknown task(s) {', '.join(unknown)}; "
                f"tasks: {', '.join(t.name for t in tasks)}"
            )
        total = sum(len(t.classes) for t in tasks)
        super().__init__(backbone, total, config, seed=seed)
        self.tasks = list(tasks)
        self.slices = task_slices(tasks)
        self.task_weights = [float(weights.get(t.name, 1.0)) for t in tasks]

    def loss(self, logits: Tensor, target: Tensor, *, train: bool) -> Tensor:
        smoothing = self.config.label_smoothing if train else 0.0
        total = logits.new_zeros(())
        for task, cols, weight in zip(self.tasks, self.slices, self.task_weights, strict=True):
            if task.multi_label:
                part = F.binary_cross_entropy_with_logits(logits[:, cols], target[:, cols])
            else:
                part = F.cross_entropy(logits[:, cols], target[:, cols], label_smoothing=smoothing)
            total = total + weight * part
        return total

    def predictions(self, logits: Tensor) -> Tensor:
        """Softmax over each multi-class slice, sigmoid over each multi-label one."""
        parts = [
            logits[:, cols].sigmoid() if task.multi_label else logits[:, cols].softmax(dim=1)
            for task, cols in zip(self.tasks, self.slices, strict=True)
        ]
        return torch.cat(parts, dim=1)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self._sums["val_loss"] += float(self.loss(logits, y, train=False)) * len(y)
        self._sums["val_hit"] += float(self.sample_scores(logits, y).sum())
        self._sums["val_n"] += float(len(y))

    def sample_scores(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per image, the mean over tasks of: correct (multi-class) or F1 at 0.5 (multi-label;
        1 when the image has no label and none is predicted)."""
        scores = []
        for task, cols in zip(self.tasks, self.slices, strict=True):
            t, z = target[:, cols], logits[:, cols]
            if task.multi_label:
                pred = (z > 0).float()
                tp = (pred * t).sum(1)
                denominator = pred.sum(1) + t.sum(1)
                scores.append(torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), 1.0))
            else:
                scores.append((z.argmax(1) == t.argmax(1)).float())
        return torch.stack(scores, dim=1).mean(dim=1)

    def split_probabilities(self, proba: Any) -> dict[str, Any]:
        """Concatenated prediction columns -> {task: its columns}."""
        return {t.name: proba[:, cols] for t, cols in zip(self.tasks, self.slices, strict=True)}
