"""Soft targets for distillation: the teacher's probability rows and the loss that mixes them
with the hard labels.

A training sample of a distillation run carries, beside its target row, a *soft row*: the
teacher's probabilities in the same concatenated task columns, then one more column that is 1
for a labelled image and 0 for an unlabelled one (whose target row is all zeros).  MixUp and
CutMix mix the target and soft rows together (one row, one weight), so that last column becomes
the share of the mixed image that carries a label: the hard term weighs each image by it and
divides its target by it (the labelled partner's target, unmixed).

Per task (``train.task_weights`` weigh the tasks as in plain fine-tuning), per image:

- multi-class: ``alpha * T² * KL(softmax(log p / T) ‖ softmax(z / T)) + (1 - alpha) * w * CE``
  (Hinton et al. 2015; the T² keeps the soft term's gradients on the scale of the hard one's;
  the cross-entropy keeps the recipe's label smoothing and class weights);
- multi-label: ``alpha * BCE(z, p) + (1 - alpha) * w * BCE(z, y)``, the teacher's per-label
  probabilities as targets (BCE is linear in its target: the same as BCE against the mix);

averaged over the batch, so an unlabelled image contributes its soft term only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from headstart.data import Task

__all__ = ["Distillation", "SoftTargets", "distillation_loss", "soft_row"]

_TINY = 1e-8
"""Floor of a teacher probability before its log (a calibrated head gives no exact zeros, but
a kNN or tree head may)."""


@dataclass(frozen=True)
class Distillation:
    """The loss mix of a distillation run (see the module docstring)."""

    temperature: float
    alpha: float


@dataclass(frozen=True)
class SoftTargets:
    """What a distillation run trains on besides the labelled data: the loss mix, the
    teacher's concatenated probability row of every labelled image (by content sha256) and the
    unlabelled images with theirs."""

    distill: Distillation
    rows: Mapping[str, np.ndarray]
    unlabelled: Sequence[tuple[Path, np.ndarray]] = field(default_factory=tuple)


def soft_row(teacher: np.ndarray, labelled: bool) -> Tensor:
    """One sample's soft row: the teacher's concatenated probabilities, then the labelled flag."""
    flag = torch.tensor([1.0 if labelled else 0.0])
    return torch.cat([torch.as_tensor(np.asarray(teacher), dtype=torch.float32), flag])


def distillation_loss(
    logits: Tensor,
    target: Tensor,
    soft: Tensor,
    *,
    tasks: Sequence[Task],
    slices: Sequence[slice],
    task_weights: Sequence[float],
    distill: Distillation,
    smoothing: float,
    class_weights: Tensor | None,
) -> Tensor:
    """The weighted sum over tasks of the mixed soft and hard terms (module docstring);
    ``soft`` is (N, columns + 1): the teacher's rows and the labelled share."""
    teacher, share = soft[:, :-1].to(logits.dtype), soft[:, -1].to(logits.dtype)
    # the labelled partner's target: a mixed row divided by its labelled share
    hard = torch.where(
        share[:, None] > 0, target.to(logits.dtype) / share.clamp(min=_TINY)[:, None], 0.0
    )
    t, a = distill.temperature, distill.alpha
    total = logits.new_zeros(())
    for task, cols, weight in zip(tasks, slices, task_weights, strict=True):
        z, p, y = logits[:, cols], teacher[:, cols], hard[:, cols]
        if task.multi_label:
            soft_part = F.binary_cross_entropy_with_logits(z, p, reduction="none").mean(1)
            hard_part = F.binary_cross_entropy_with_logits(z, y, reduction="none").mean(1)
        else:
            log_teacher = F.log_softmax(p.clamp(min=_TINY).log() / t, dim=1)
            log_student = F.log_softmax(z / t, dim=1)
            kl = F.kl_div(log_student, log_teacher, log_target=True, reduction="none")
            soft_part = kl.sum(1) * t * t
            cw = None if class_weights is None else class_weights[cols].to(logits.dtype)
            hard_part = F.cross_entropy(
                z, y, weight=cw, label_smoothing=smoothing, reduction="none"
            )
        per_image = a * soft_part + (1.0 - a) * share * hard_part
        total = total + weight * per_image.mean()
    return total
