"""The head of a text fine-tune starts as the probe's: logistic regression on the pretrained
encoder's embeddings of the training split (the embedding cache's, so after a probe nothing is
embedded again), folded into the head's ``Linear`` (LP-FT: linear probe, then fine-tune).

Why: the encoder's embeddings are L2-normalised, so each feature is ~0.05 and a randomly
initialised head needs hundreds of AdamW steps before its logits mean anything; meanwhile the
encoder is trained through a head that is still noise.  On a few examples per class that left
fine-tuning far below the probe after three epochs (minilm-l6 on banking77, 10 per class: 75%
test accuracy at a head rate of 1e-2, against the probe's 87%; from the probe's head: 86%).
Starting from the probe's head, the first epoch starts where the probe is, and the encoder is
only asked to improve on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from headstart.backbones import BackboneRef
from headstart.cache import CacheRoot
from headstart.config import FitConfig
from headstart.data import Manifest, Task
from headstart.data.manifest import indicator
from headstart.finetune.module import FinetuneModule
from headstart.heads import LogisticHead

__all__ = ["fold_logistic", "init_head_from_probe", "probe_rows"]

#: The bias of a multi-label label that every (or no) training text has: sigmoid(±4) ≈ 0.98.
_CONSTANT_LOGIT = 4.0


def fold_logistic(head: LogisticHead) -> tuple[np.ndarray, np.ndarray]:
    """The fitted head as one linear map of the raw features: (W, b) with ``x @ W.T + b`` its
    decision scores (its standardisation folded in); rows follow ``head.classes_`` (one row
    for two classes: the second class's score against the first's)."""
    coef = np.asarray(head.coef_, dtype=np.float64)
    scale = np.asarray(head.scale_, dtype=np.float64)
    mean = np.asarray(head.mean_, dtype=np.float64)
    weight = coef / scale
    bias = np.asarray(head.intercept_, dtype=np.float64) - weight @ mean
    return weight, bias


def probe_rows(
    task: Task, features: np.ndarray, cells: Sequence[Sequence[str]]
) -> tuple[np.ndarray, np.ndarray]:
    """(W, b): the task's rows of the head (``task.classes`` order) from the probe's logistic
    regression on ``features`` with labels ``cells``.  A two-class task's single score splits
    into ±score/2 (the same softmax); a multi-label label every text has, or none, gets only a
    bias."""
    d = features.shape[1]
    if task.multi_label:
        target = indicator(cells, task.classes)
        weight, bias = np.zeros((len(task.classes), d)), np.zeros(len(task.classes))
        for j in range(len(task.classes)):
            column = target[:, j]
            if column.min() == column.max():
                bias[j] = _CONSTANT_LOGIT if column[0] else -_CONSTANT_LOGIT
                continue
            w, b = fold_logistic(LogisticHead().fit(features, column))
            weight[j], bias[j] = w[0], b[0]
        return weight, bias
    labels = np.array([c[0] for c in cells])
    head = LogisticHead().fit(features, labels)
    w, b = fold_logistic(head)
    if len(head.classes_) == 2 and w.shape[0] == 1:
        w, b = np.vstack([-w / 2, w / 2]), np.concatenate([-b / 2, b / 2])
    order = [list(head.classes_).index(c) for c in task.classes]
    return w[order], b[order]


def init_head_from_probe(
    module: FinetuneModule, manifest: Manifest, ref: BackboneRef, cfg: FitConfig
) -> None:
    """Set ``module``'s head to the probe's heads (one per task) fitted on the training split's
    embeddings by ``ref`` (module docstring)."""
    # the text engine loads tokenizers and ONNX Runtime only when a text is embedded
    from headstart.features.text_engine import extract_texts

    rows = manifest.rows("train")
    samples = [manifest.samples[i] for i in rows]
    store = CacheRoot.for_config(cfg).store
    features = extract_texts(
        [s.text or "" for s in samples],
        [s.sha256 for s in samples],
        ref,
        store=store,
        batch_size=cfg.extract.batch_size,
        progress=False,
        engine=cfg.extract.engine,
    ).features
    linear = module.linear_layer()
    weights: list[Any] = []
    biases: list[Any] = []
    for task in manifest.targets:
        w, b = probe_rows(task, features, [s.labels[task.name] for s in samples])
        weights.append(w)
        biases.append(b)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.vstack(weights)).to(linear.weight.dtype))
        linear.bias.copy_(torch.from_numpy(np.concatenate(biases)).to(linear.bias.dtype))
