"""Targets of the fine-tuning network: every task's columns side by side in one row.

The head is one ``Linear`` whose output columns are the tasks' slices, in task order.  A sample's
target row concatenates a one-hot block per multi-class task and a 0/1 block per multi-label
task; MixUp and CutMix mix whole rows, which mixes every slice by the same weight.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from headstart.data import Task
from headstart.finetune.augment import AugmentPlan

__all__ = ["Mixer", "batch_mixer", "class_weight_rows", "task_slices", "task_targets"]

Mixer = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


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


def _mixup(x: Tensor, y: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    return x.roll(1, 0).mul(1.0 - lam).add(x.mul(lam)), y.roll(1, 0).mul(1.0 - lam).add(y.mul(lam))


def _cutmix(x: Tensor, y: Tensor, lam: float) -> tuple[Tensor, Tensor]:
    """Paste a box of the rolled batch (area ``1 - lam``); targets mix by the pasted area."""
    h, w = x.shape[-2:]
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    half_h, half_w = int(0.5 * h * (1.0 - lam) ** 0.5), int(0.5 * w * (1.0 - lam) ** 0.5)
    top, bottom = max(cy - half_h, 0), min(cy + half_h, h)
    left, right = max(cx - half_w, 0), min(cx + half_w, w)
    out = x.clone()
    out[..., top:bottom, left:right] = x.roll(1, 0)[..., top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (h * w)
    return out, y.roll(1, 0).mul(1.0 - kept).add(y.mul(kept))


def batch_mixer(plan: AugmentPlan) -> Mixer | None:
    """MixUp and/or CutMix on a batch of images and target rows (one of them, chosen at
    random, per batch; torchvision's rules: ``lam ~ Beta(alpha, alpha)``, the partner is the
    batch rolled by one), or ``None`` when both are off.  torchvision's own transforms take
    class indices only; these mix target rows of any tasks."""
    kinds = [(k, a) for k, a in (("mixup", plan.mixup_alpha), ("cutmix", plan.cutmix_alpha)) if a]
    if not kinds:
        return None

    def mix(images: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        kind, alpha = kinds[int(torch.randint(len(kinds), ()))]
        lam = float(torch.distributions.Beta(alpha, alpha).sample())
        fn = _mixup if kind == "mixup" else _cutmix
        return fn(images, targets.to(images.dtype), lam)

    return mix


def class_weight_rows(tasks: Sequence[Task], weights: Mapping[str, Tensor]) -> Tensor | None:
    """Per output column, the class weight of its multi-class task (1 elsewhere), or None
    when no task is weighted."""
    if not weights:
        return None
    parts = [weights[t.name] if t.name in weights else torch.ones(len(t.classes)) for t in tasks]
    return torch.cat(parts).float()
