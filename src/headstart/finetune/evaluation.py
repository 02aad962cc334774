"""A trained fine-tuning module → exportable heads, probabilities and metrics per split."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from headstart.config import FitConfig
from headstart.data import Manifest
from headstart.data.augment import eval_transform
from headstart.evaluate import evaluate_predictions
from headstart.finetune.data import DecodedImages
from headstart.finetune.module import FinetuneModule
from headstart.finetune.task_module import TaskFinetuneModule, task_targets
from headstart.heads.logistic import LogisticHead

__all__ = ["Evaluated", "evaluate_trained", "linear_head_export", "split_targets"]


def linear_head_export(weight: np.ndarray, bias: np.ndarray, classes: list[Any]) -> LogisticHead:
    """The trained ``Linear`` as a fitted :class:`LogisticHead` (mean 0, scale 1), so the bundle
    and ``headstart.load(...).predict`` need nothing new."""
    head = LogisticHead(Cs=(1.0,))
    d = weight.shape[1]
    head.restore_state(
        {
            "mean": np.zeros(d),
            "scale": np.ones(d),
            "coef": weight.astype(np.float64),
            "intercept": bias.astype(np.float64),
        },
        {"C": 0.0, "cv_scores": [], "n_iter": 0},
    )
    head.classes_ = np.asarray(classes)
    head.n_features_in_ = d
    return head


def split_targets(manifest: Manifest, split: str) -> tuple[list[int], list[Any]]:
    """The split's sample rows and their targets: class indices for plain data, concatenated
    per-task target rows (see :mod:`headstart.finetune.task_module`) otherwise."""
    rows = [i for i, s in enumerate(manifest.samples) if s.split == split]
    if not manifest.is_plain:
        targets = manifest.targets
        return rows, [torch.tensor(task_targets(targets, manifest.samples[i].labels)) for i in rows]
    index = {c: i for i, c in enumerate(manifest.classes)}
    return rows, [index[manifest.samples[i].label] for i in rows]


@torch.inference_mode()
def _probabilities(
    module: FinetuneModule, manifest: Manifest, images: DecodedImages, batch_size: int
) -> dict[str, np.ndarray]:
    module.eval()
    transform = eval_transform(images.prep)
    out: dict[str, np.ndarray] = {}
    for split in ("val", "test"):
        rows, _ = split_targets(manifest, split)
        if not rows:
            continue
        chunks = []
        for start in range(0, len(rows), batch_size):
            batch = torch.stack([transform(images[i]) for i in rows[start : start + batch_size]])
            chunks.append(module.predictions(module(batch)).double().numpy())
        out[split] = np.concatenate(chunks)
    return out


@dataclass
class Evaluated:
    """The trained head(s) as exportable heads, with metrics and probabilities per split
    (plain data: ``metrics``/``probabilities``; tasks: ``task_metrics``/``task_probabilities``,
    and ``head`` maps task names to heads)."""

    head: Any
    metrics: dict[str, Any] = field(default_factory=dict)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    task_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    task_probabilities: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


def _linear_arrays(module: FinetuneModule) -> tuple[np.ndarray, np.ndarray]:
    linear = module.linear_layer()
    return linear.weight.detach().double().numpy(), linear.bias.detach().double().numpy()


def evaluate_trained(
    module: FinetuneModule, manifest: Manifest, images: DecodedImages, cfg: FitConfig
) -> Evaluated:
    """The trained module's head(s) as exportable heads, with metrics on val and test."""
    probabilities = _probabilities(module, manifest, images, cfg.train.batch_size * 2)
    weight, bias = _linear_arrays(module)
    if isinstance(module, TaskFinetuneModule):
        return _evaluate_tasks(module, manifest, probabilities, weight, bias, cfg)
    metrics = {
        split: evaluate_predictions(
            [s.label for s in manifest.split(split)],
            [manifest.classes[j] for j in proba.argmax(axis=1)],
            manifest.classes,
            n_boot=cfg.eval.n_boot,
            seed=cfg.data.seed,
            proba=proba,
        )
        for split, proba in probabilities.items()
    }
    head = linear_head_export(weight, bias, manifest.classes)
    return Evaluated(head, metrics, probabilities)


def _evaluate_tasks(
    module: TaskFinetuneModule,
    manifest: Manifest,
    concatenated: dict[str, np.ndarray],
    weight: np.ndarray,
    bias: np.ndarray,
    cfg: FitConfig,
) -> Evaluated:
    """Each task's slice of the trained Linear as its own head (a binary head per label for a
    multi-label task), thresholds tuned on val, metrics per task."""
    from headstart.tasks import LabelSetHead
    from headstart.tasks.probe import evaluate_tasks, tune_label_thresholds

    heads: dict[str, Any] = {}
    for task, cols in zip(module.tasks, module.slices, strict=True):
        w, b = weight[cols], bias[cols]
        if task.multi_label:
            binary = [linear_head_export(w[j : j + 1], b[j : j + 1], [0, 1]) for j in range(len(b))]
            heads[task.name] = LabelSetHead(list(task.classes), binary, np.full(len(b), 0.5))
        else:
            heads[task.name] = linear_head_export(w, b, list(task.classes))
    probabilities = {s: module.split_probabilities(p) for s, p in concatenated.items()}
    tune_label_thresholds(manifest, heads, probabilities)
    metrics = evaluate_tasks(
        manifest, heads, probabilities, n_boot=cfg.eval.n_boot, seed=cfg.data.seed
    )
    return Evaluated(heads, task_metrics=metrics, task_probabilities=probabilities)
