"""What the service's routes share: the model, its limits and batcher, and how one input's
probability rows become the JSON answer (every task's labels and top-k, the OOD verdict)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from headstart.data import Task
from headstart.model import Model, answer, ood_json
from headstart.serve.batching import Batcher, TaskRows
from headstart.serve.uploads import Limits

__all__ = ["Scored", "Service", "scored_rows"]

Scored = tuple[TaskRows, float | None]
"""One input's probability row of each task and its OOD score (None without a scorer)."""


def scored_rows(model: Model) -> Callable[[Sequence[Any]], list[Scored]]:
    """Inputs -> one (task rows, OOD score) per input from one backbone pass: what the
    :class:`Batcher` hands each caller.  Images for an image model, texts (usable, stripped)
    for a text model."""

    def run(inputs: Sequence[Any]) -> list[Scored]:
        if model.modality == "text":
            probas, ood = model.score_texts(list(inputs))
        else:
            probas, ood = model.score_images(inputs)
        return [
            ({name: p[i] for name, p in probas.items()}, None if ood is None else float(ood[i]))
            for i in range(len(inputs))
        ]

    return run


@dataclass(frozen=True)
class Service:
    """What the routes share."""

    model: Model
    limits: Limits
    batcher: Batcher[Scored]
    decode: Callable[[bytes], Image.Image]
    auth: list[Any]
    explain: bool
    thresholds: dict[str, np.ndarray | None]

    @property
    def tasks(self) -> list[Task]:
        return self.model.tasks

    @property
    def classes(self) -> list[str]:
        """The first task's classes."""
        return self.model.classes

    @property
    def texts(self) -> bool:
        """True when the model classifies texts."""
        return self.model.modality == "text"

    def answers(self, rows: TaskRows, top_k: int) -> dict[str, dict[str, Any]]:
        """Every task's chosen labels and top-k for one input's probability rows."""
        return {
            t.name: answer(t, rows[t.name], self.thresholds[t.name], top_k).to_dict()
            for t in self.tasks
        }

    def ood(self, score: float | None) -> dict[str, Any]:
        """``ood_score`` and ``ood`` of one input (null without a scorer)."""
        cut = self.model.ood_threshold
        return ood_json(score, None if score is None or cut is None else score > cut)
