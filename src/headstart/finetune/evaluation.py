"""A trained fine-tuning module → one exportable head per task, probabilities and metrics, and
the out-of-distribution scorer of the trained backbone's embeddings: its bank the pooled
features of the training images (at most :data:`~headstart.heads.ood.MAX_BANK`, a seeded
subsample, embedded with the evaluation transform), its threshold set on the val split's.
Texts are evaluated the same way, from their tokens (:class:`~headstart.finetune.data.Inputs`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from headstart.config import FitConfig
from headstart.data import Manifest
from headstart.finetune.data import Inputs
from headstart.finetune.module import FinetuneModule
from headstart.finetune.targets import task_targets
from headstart.heads import LogisticHead, MultiLabelHead, OodScorer, fit_ood
from headstart.heads.ood import bank_rows
from headstart.model import split_columns
from headstart.result import score_splits
from headstart.runfolder import MetricsRecord

__all__ = ["Evaluated", "evaluate_trained", "linear_head_export", "split_targets"]


def linear_head_export(weight: np.ndarray, bias: np.ndarray, classes: list[Any]) -> LogisticHead:
    """A trained ``Linear`` as a fitted :class:`LogisticHead` (mean 0, scale 1), so the bundle
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


def _multilabel_export(weight: np.ndarray, bias: np.ndarray) -> MultiLabelHead:
    """A multi-label slice of the ``Linear`` as one binary logistic head per label."""
    head = MultiLabelHead("logistic")
    head.estimators_ = [
        linear_head_export(weight[j : j + 1], bias[j : j + 1], [0, 1]) for j in range(len(bias))
    ]
    head.one_d_ = False
    head.classes_ = np.arange(len(bias))
    head.thresholds_ = np.full(len(bias), 0.5)
    head.n_features_in_ = weight.shape[1]
    return head


def split_targets(manifest: Manifest, split: str) -> tuple[list[int], list[torch.Tensor]]:
    """The split's sample rows and their concatenated per-task target rows."""
    rows = manifest.rows(split)
    targets = manifest.targets
    return rows, [torch.tensor(task_targets(targets, manifest.samples[i].labels)) for i in rows]


@torch.inference_mode()
def _forward(
    module: FinetuneModule, inputs: Inputs, rows: list[int], batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """The pooled features and every task's probabilities (concatenated) of ``rows``."""
    module.eval()
    order = inputs.eval_order(rows)
    features, probs = [], []
    for start in range(0, len(order), batch_size):
        batch = inputs.eval_batch(order[start : start + batch_size])
        if batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        # what module(batch) computes, with the features kept on the way
        pooled = module.backbone(batch)
        probs.append(module.predictions(module.head(pooled)).double().numpy())
        features.append(pooled.float().numpy())
    # back to the order of ``rows``
    where = {row: i for i, row in enumerate(order)}
    back = np.array([where[row] for row in rows], dtype=np.int64)
    return np.concatenate(features)[back], np.concatenate(probs)[back]


def _ood(
    module: FinetuneModule,
    manifest: Manifest,
    images: Inputs,
    val_features: np.ndarray,
    cfg: FitConfig,
) -> OodScorer:
    """The scorer of the trained backbone: a bank of training images' features, the
    threshold on the val split's."""
    train = manifest.rows("train")
    kept = [train[j] for j in bank_rows(len(train), seed=cfg.data.seed)]
    features, _ = _forward(module, images, kept, cfg.train.batch_size * 2)
    where = f"the val split ({len(val_features)} {manifest.noun})"
    return fit_ood(
        features,
        held_out=val_features,
        seed=cfg.data.seed,
        fitted_on=where,
        n_train=len(train),
        noun=manifest.noun,
    )


@dataclass
class Evaluated:
    """The trained heads (task name -> head) with probabilities and metrics per split."""

    heads: dict[str, Any]
    probabilities: dict[str, dict[str, np.ndarray]]
    metrics: MetricsRecord
    ood: OodScorer | None = None


def evaluate_trained(
    module: FinetuneModule, manifest: Manifest, images: Inputs, cfg: FitConfig
) -> Evaluated:
    """Each task's slice of the trained ``Linear`` as its own head (a binary head per label
    for a multi-label task), thresholds tuned on val, metrics on val and test, and the OOD
    scorer (module docstring)."""
    concatenated: dict[str, np.ndarray] = {}
    features: dict[str, np.ndarray] = {}
    for split in ("val", "test"):
        rows = manifest.rows(split)
        if rows:
            features[split], concatenated[split] = _forward(
                module, images, rows, cfg.train.batch_size * 2
            )
    linear = module.linear_layer()
    weight = linear.weight.detach().double().numpy()
    bias = linear.bias.detach().double().numpy()
    heads: dict[str, Any] = {}
    for task, cols in zip(module.tasks, module.slices, strict=True):
        if task.multi_label:
            heads[task.name] = _multilabel_export(weight[cols], bias[cols])
        else:
            heads[task.name] = linear_head_export(weight[cols], bias[cols], list(task.classes))
    probabilities = {s: split_columns(module.tasks, p) for s, p in concatenated.items()}
    metrics = score_splits(
        manifest, heads, probabilities, n_boot=cfg.eval.n_boot, seed=cfg.data.seed
    )
    ood = _ood(module, manifest, images, features["val"], cfg) if "val" in features else None
    return Evaluated(heads, probabilities, metrics, ood)
