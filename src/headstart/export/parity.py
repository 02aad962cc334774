"""The export's checks: each task's probabilities and the OOD score from onnxruntime against
torch eager, and torch's against the bundle's numpy heads and scorer on the same features; a
difference beyond the tolerance is an :class:`ExportError` and no file is written."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from headstart.bundle import BundleContents
from headstart.errors import HeadstartError
from headstart.export.document import OOD_OUTPUT
from headstart.heads import task_proba

if TYPE_CHECKING:
    from headstart.export.torch_model import Classifier

__all__ = [
    "ExportError",
    "OodParity",
    "Reference",
    "TaskParity",
    "check_ood_parity",
    "check_parity",
    "max_diff",
    "torch_reference",
]

_BATCH = 32
Probabilities = dict[str, np.ndarray]


class ExportError(HeadstartError, RuntimeError):
    """An exported model does not reproduce the bundle's predictions within the tolerance."""


@dataclass(frozen=True)
class TaskParity:
    """How closely one task's output matches: onnxruntime vs torch eager, torch head module vs
    the bundle's numpy head (same features)."""

    output: str
    max_abs_diff: float
    head_max_abs_diff: float
    bundle_max_abs_diff: float | None = None
    """A text model's: onnxruntime vs the bundle's own predictions (its text engine and
    heads; None for an image model, whose torch backbone is the bundle's own)."""


@dataclass(frozen=True)
class OodParity:
    """How closely the graph's ``ood_score`` matches: onnxruntime vs torch eager, torch's OOD
    module vs the bundle's numpy scorer (same features)."""

    max_abs_diff: float
    scorer_max_abs_diff: float
    bundle_max_abs_diff: float | None = None
    """A text model's: onnxruntime vs the bundle's own scores (None for an image model)."""


@dataclass
class Reference:
    """Torch eager outputs and the bundle's numpy heads and scorer on the same features."""

    eager: Probabilities
    reference: Probabilities
    eager_ood: np.ndarray | None
    reference_ood: np.ndarray | None


def torch_reference(
    module: Classifier, contents: BundleContents, batches: Sequence[np.ndarray]
) -> Reference:
    """Each task's torch eager probabilities and the bundle's numpy head's on the same
    features; the same for the OOD score when there is a scorer.  ``batches``: one
    preprocessed batch per graph input (rows: the same images)."""
    # lazy: torch takes seconds to import; only this path needs it
    import torch

    tasks = contents.tasks
    probs: dict[str, list[np.ndarray]] = {t.name: [] for t in tasks}
    feats, oods = [], []
    with torch.inference_mode():
        for i in range(0, len(batches[0]), _BATCH):
            f = module.backbone(*(torch.from_numpy(b[i : i + _BATCH]) for b in batches))
            for task, p in zip(tasks, module.task_probabilities(f), strict=True):
                probs[task.name].append(p.double().numpy())
            if module.ood is not None:
                oods.append(module.ood(f).double().numpy().ravel())
            feats.append(f.float().numpy())
    features = np.concatenate(feats)
    eager = {name: np.concatenate(chunks) for name, chunks in probs.items()}
    reference = {t.name: task_proba(t, contents.heads[t.name], features) for t in tasks}
    if contents.ood is None:
        return Reference(eager, reference, None, None)
    return Reference(eager, reference, np.concatenate(oods), contents.ood.score(features))


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def check_parity(
    parity: Mapping[str, TaskParity], tolerance: float, n: int, what: str = "images"
) -> None:
    """An :class:`ExportError` naming the first task whose output differs by more than
    ``tolerance`` (``n`` ``what``: how many images or texts were checked)."""
    several = len(parity) > 1
    for name, p in parity.items():
        where = f" (task '{name}', output '{p.output}')" if several else ""
        if p.max_abs_diff > tolerance:
            raise ExportError(
                f"ONNX export does not match torch{where}: max abs probability difference "
                f"{p.max_abs_diff:.3g} on {n} {what} exceeds the tolerance {tolerance:g}; "
                "the file was not written"
            )
        if p.head_max_abs_diff > tolerance:
            raise ExportError(
                f"the torch head{where} differs from the bundle's head by "
                f"{p.head_max_abs_diff:.3g} (tolerance {tolerance:g}) on {n} {what}; the file "
                "was not written"
            )
        if p.bundle_max_abs_diff is not None and p.bundle_max_abs_diff > tolerance:
            raise ExportError(
                f"ONNX export does not match the model's own predictions{where}: max abs "
                f"probability difference {p.bundle_max_abs_diff:.3g} on {n} {what} exceeds the "
                f"tolerance {tolerance:g}; the file was not written"
            )


def check_ood_parity(ood: OodParity | None, tolerance: float, n: int, what: str = "images") -> None:
    """As :func:`check_parity`, for the OOD score."""
    if ood is None:
        return
    if ood.max_abs_diff > tolerance:
        raise ExportError(
            f"ONNX export does not match torch (output '{OOD_OUTPUT}'): max abs OOD score "
            f"difference {ood.max_abs_diff:.3g} on {n} {what} exceeds the tolerance "
            f"{tolerance:g}; the file was not written"
        )
    if ood.scorer_max_abs_diff > tolerance:
        raise ExportError(
            f"the torch OOD module differs from the bundle's scorer by "
            f"{ood.scorer_max_abs_diff:.3g} (tolerance {tolerance:g}) on {n} {what}; the file "
            "was not written"
        )
    if ood.bundle_max_abs_diff is not None and ood.bundle_max_abs_diff > tolerance:
        raise ExportError(
            f"ONNX export does not match the model's own OOD scores: max abs difference "
            f"{ood.bundle_max_abs_diff:.3g} on {n} {what} exceeds the tolerance {tolerance:g}; "
            "the file was not written"
        )
