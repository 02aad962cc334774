"""The whole model (backbone -> every task's head -> probabilities) as one ONNX graph, checked
against torch and against the bundle's own heads.

``export_model`` builds the model in torch (the bundle's backbone plus one
:func:`~headstart.heads.torch_head.task_module` per task), exports it through the project's one
export path (:func:`headstart.features.onnx_engine.export_onnx`), runs the file with onnxruntime
on real images and compares every task's probabilities with torch's; torch's are compared with
the bundle's numpy heads on the same features.  The file gets its final name only after both
checks pass.  The graph has one image input per backbone part (one for a single backbone; a
fused backbone's parts are all in the graph, their features concatenated before the heads)
and one output per task (see :mod:`headstart.export.document` for the naming rules and the
document written beside the model, ``model.onnx.json``, and stored in its own
``metadata_props``), and ``ood_score`` when the bundle has an OOD scorer: checked the same way,
onnxruntime against torch and torch against the bundle's numpy scorer.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.bundle import BundleContents, read_bundle
from headstart.data.manifest import Task
from headstart.errors import ConfigError
from headstart.export.document import (
    METADATA_KEY,
    OPSET,
    OUTPUT_NAME,
    describe,
    input_names,
    metadata_props,
    output_names,
)
from headstart.export.graph import (
    JOINED,
    json_text,
    onnx_probabilities,
    ood_column,
    publish,
    split_outputs,
    temp_beside,
)
from headstart.export.images import CheckImages, Images, accuracy, check_images
from headstart.export.int8_backbone import (
    Int8BackboneParity,
    check_int8_parity,
    graft_int8_backbone,
    int8_reference,
)
from headstart.export.parity import (
    ExportError,
    OodParity,
    TaskParity,
    check_ood_parity,
    check_parity,
    max_diff,
    torch_reference,
)
from headstart.export.quantize import QUANTIZATIONS, quantize_int8
from headstart.features.onnx_engine import export_onnx
from headstart.fsutil import atomic_write_text
from headstart.model import split_columns

__all__ = [
    "EXPORT_FORMATS",
    "METADATA_KEY",
    "OUTPUT_NAME",
    "ExportError",
    "ExportResult",
    "Int8Report",
    "OodParity",
    "TaskInt8",
    "TaskParity",
    "describe",
    "export_model",
    "onnx_probabilities",
]

EXPORT_FORMATS = ("onnx",)


@dataclass(frozen=True)
class TaskInt8:
    """One task's int8 output against the float32 one.  Top-1 agreement and accuracy are for
    multi-class tasks (None for a multi-label task); accuracy is NaN when no check image is in a
    folder named after one of the task's classes."""

    max_abs_diff: float
    top1_agreement: float | None
    accuracy_fp32: float | None
    accuracy_int8: float | None
    n_labelled: int


@dataclass(frozen=True)
class Int8Report:
    """The int8 model against the float32 one on the same check images.

    ``max_abs_diff``: the largest over every task; ``top1_agreement``: the lowest over the
    multi-class tasks (None when there is none); accuracy and ``n_labelled``: the first task's
    (NaN and 0 when it is multi-label); every task's own figures are in ``tasks``."""

    path: Path
    max_abs_diff: float
    top1_agreement: float | None
    accuracy_fp32: float
    accuracy_int8: float
    n_labelled: int
    tasks: dict[str, TaskInt8] = field(default_factory=dict)
    ood_max_abs_diff: float | None = None
    """The largest change of the OOD score (its matmul stays float32; None without one)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and how well it matches torch (the largest difference
    over every task; each task's in ``tasks``)."""

    path: Path
    metadata_path: Path
    n_check_images: int
    max_abs_diff: float  # onnxruntime vs torch eager, whole model, probabilities
    head_max_abs_diff: float  # torch head module vs the bundle's numpy head, same features
    tolerance: float
    seconds: float
    int8: Int8Report | None = None
    tasks: dict[str, TaskParity] = field(default_factory=dict)
    ood: OodParity | None = None
    """The OOD score's parity (None when the bundle has no scorer)."""
    int8_backbone: Int8BackboneParity | None = None
    """For a bundle with an int8 backbone: the published graph (int8 backbone) against the
    bundle's own int8 predictions; ``max_abs_diff`` above is then the float32 graph's."""
    checked: str = "images"
    """What the checks ran on: ``"images"``, or ``"texts"`` for a text model (whose
    ``n_check_images`` counts texts)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings)."""
        d = asdict(self)
        d["path"], d["metadata_path"] = str(self.path), str(self.metadata_path)
        if self.int8 is not None:
            d["int8"]["path"] = str(self.int8.path)
        return d


def _validate(fmt: str, quantize: str | None, tolerance: float) -> None:
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'; valid: {', '.join(EXPORT_FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization '{quantize}'; valid: {', '.join(QUANTIZATIONS)}")
    if not tolerance >= 0:
        raise ConfigError(f"tolerance must be >= 0, got {tolerance}")


def _task_int8(task: Task, fp32: np.ndarray, int8: np.ndarray, checks: CheckImages) -> TaskInt8:
    diff = max_diff(int8, fp32)
    if task.multi_label:
        return TaskInt8(diff, None, None, None, 0)
    labels = checks.labels_for(task.classes)
    return TaskInt8(
        max_abs_diff=diff,
        top1_agreement=float(np.mean(np.argmax(int8, 1) == np.argmax(fp32, 1))),
        accuracy_fp32=accuracy(fp32, labels, task.classes),
        accuracy_int8=accuracy(int8, labels, task.classes),
        n_labelled=sum(label is not None for label in labels),
    )


def _int8(
    path: Path,
    fp32: Mapping[str, np.ndarray],
    checks: CheckImages,
    tasks: Sequence[Task],
    fp32_ood: np.ndarray | None,
) -> Int8Report:
    dest = path.with_name(f"{path.name.removesuffix('.onnx')}.int8.onnx")
    tmp = temp_beside(dest)
    try:
        quantize_int8(path, tmp)
        outputs = onnx_probabilities(tmp, checks.batches)
        int8 = split_columns(tasks, outputs)
        int8_ood = ood_column(outputs, tasks)
        publish(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    per_task = {t.name: _task_int8(t, fp32[t.name], int8[t.name], checks) for t in tasks}
    agreements = [r.top1_agreement for r in per_task.values() if r.top1_agreement is not None]
    first = per_task[tasks[0].name]
    return Int8Report(
        path=dest,
        max_abs_diff=max(r.max_abs_diff for r in per_task.values()),
        top1_agreement=min(agreements) if agreements else None,
        accuracy_fp32=math.nan if first.accuracy_fp32 is None else first.accuracy_fp32,
        accuracy_int8=math.nan if first.accuracy_int8 is None else first.accuracy_int8,
        n_labelled=first.n_labelled,
        tasks=per_task,
        ood_max_abs_diff=None
        if fp32_ood is None or int8_ood is None
        else max_diff(int8_ood, fp32_ood),
    )


def _graft_int8(
    tmp: Path, contents: BundleContents, checks: CheckImages, tolerance: float
) -> tuple[dict[str, np.ndarray], np.ndarray | None, Int8BackboneParity]:
    """Replace the checked float32 graph at ``tmp`` by the one with the bundle's int8
    backbone, checked against the bundle's own int8 predictions; its outputs and parity."""
    grafted = temp_beside(tmp)
    try:
        graft_int8_backbone(tmp, contents, grafted)
        outputs = onnx_probabilities(grafted, checks.batches)
        probas, ood = split_columns(contents.tasks, outputs), ood_column(outputs, contents.tasks)
        reference = int8_reference(contents, checks.batches)
        parity = check_int8_parity(probas, ood, reference, tolerance, len(checks.paths))
        os.replace(grafted, tmp)
    except BaseException:
        grafted.unlink(missing_ok=True)
        raise
    return probas, ood, parity


def export_model(
    bundle_path: str | Path,
    *,
    fmt: str = "onnx",
    output: str | Path | None = None,
    quantize: str | None = None,
    check_images: Images | None = None,
    tolerance: float = 1e-4,
    check_texts: Sequence[str | Path] | None = None,
) -> ExportResult:
    """Export a bundle as one ONNX graph (default ``BUNDLE/model.onnx``), one output per task,
    and check it.

    ``check_images``: files or folders of real images for the parity check (default: the bundled
    demo test photos); images in a folder named after a class of a multi-class task also count
    for that task's accuracy.  Raises :class:`ExportError` (and leaves no file behind) when a
    task's onnxruntime probabilities differ from torch's, or torch's from the bundle's heads',
    by more than ``tolerance``.  A bundle with an int8 backbone (``extract.precision=int8``)
    is exported with that int8 backbone in the graph (the float32 graph is checked against
    torch first; the int8 one against the bundle's own int8 predictions, see
    :mod:`headstart.export.int8_backbone`).  ``quantize="int8"`` (dynamic int8 of the
    MatMul/Gemm weights only, :mod:`headstart.export.quantize`) also writes ``model.int8.onnx``
    and reports its change per task (top-1 agreement and accuracy for multi-class tasks, the
    largest probability change for every task).

    A text model's graph takes token ids and an attention mask, its tokenizer is written beside
    it and it is checked on ``check_texts`` (texts, ``.txt`` or CSV files; default: a few
    built-in sentences) instead of images: see :mod:`headstart.export.text_export`.
    """
    _validate(fmt, quantize, tolerance)
    start = time.perf_counter()
    bundle_path = Path(bundle_path)
    contents = read_bundle(bundle_path)
    tasks = contents.tasks
    path = Path(output) if output is not None else bundle_path / "model.onnx"
    if contents.backbone.modality == "text":
        if check_images is not None:
            raise ConfigError("a text model is checked on texts: give check_texts, not images")
        # lazy: the text export loads the tokenizers library; image exports never need it
        from headstart.export.text_export import export_text_model

        return export_text_model(
            contents, path, quantize=quantize, check_texts=check_texts, tolerance=tolerance
        )
    if check_texts is not None:
        raise ConfigError("an image model is checked on images: give check_images, not texts")
    checks = check_images_for(contents, check_images)
    # lazy: torch takes seconds to import; only this path needs it
    from headstart.export.torch_model import build_torch_model

    module = build_torch_model(contents)
    ref = torch_reference(module, contents, checks.batches)
    doc = describe(contents)
    names = output_names(tasks)
    # one image input per backbone part (a fused backbone's), each of its part's crop size
    crops = [part.preprocessing.crop for part in contents.backbone.members]
    inputs = dict(zip(input_names(contents.backbone), crops, strict=True))
    tmp = temp_beside(path)
    try:
        joined = names[0] if len(tasks) == 1 and contents.ood is None else JOINED
        meta = metadata_props(doc)
        export_onnx(module, tmp, OPSET, output_name=joined, metadata=meta, inputs=inputs)
        if joined == JOINED:
            split_outputs(tmp, tasks, ood=contents.ood is not None)
        outputs = onnx_probabilities(tmp, checks.batches)
        fp32, fp32_ood = split_columns(tasks, outputs), ood_column(outputs, tasks)
        parity = {
            t.name: TaskParity(
                output=name,
                max_abs_diff=max_diff(fp32[t.name], ref.eager[t.name]),
                head_max_abs_diff=max_diff(ref.eager[t.name], ref.reference[t.name]),
            )
            for t, name in zip(tasks, names, strict=True)
        }
        ood = None
        if fp32_ood is not None and ref.eager_ood is not None and ref.reference_ood is not None:
            ood = OodParity(
                max_diff(fp32_ood, ref.eager_ood), max_diff(ref.eager_ood, ref.reference_ood)
            )
        check_parity(parity, tolerance, len(checks.paths))
        check_ood_parity(ood, tolerance, len(checks.paths))
        int8_parity = None
        if contents.backbone.precision == "int8":  # the graph published is the int8 one
            fp32, fp32_ood, int8_parity = _graft_int8(tmp, contents, checks, tolerance)
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    diff = max(p.max_abs_diff for p in parity.values())
    head_diff = max(p.head_max_abs_diff for p in parity.values())
    doc["parity"] = {
        "images": len(checks.paths),
        "max_abs_diff": diff,
        "head_max_abs_diff": head_diff,
        "tolerance": tolerance,
        "tasks": {name: asdict(p) for name, p in parity.items()},
        "ood": None if ood is None else asdict(ood),
    }
    doc["backbone_precision"] = contents.backbone.precision
    if int8_parity is not None:  # the float32 graph above checked the heads against torch
        doc["int8_backbone_parity"] = {"images": len(checks.paths), **asdict(int8_parity)}
    report = _int8(path, fp32, checks, tasks, fp32_ood) if quantize == "int8" else None
    if report is not None:
        doc["int8"] = {k: v for k, v in asdict(report).items() if k != "path"}
        doc["int8"]["file"] = report.path.name
    meta_path = path.with_name(path.name + ".json")
    atomic_write_text(meta_path, json_text(doc))
    return ExportResult(
        path, meta_path, len(checks.paths), diff, head_diff, tolerance,
        time.perf_counter() - start, report, parity, ood, int8_parity,
    )  # fmt: skip


def check_images_for(contents: BundleContents, images: Images | None) -> CheckImages:
    """The decoded check images for a bundle: one batch per graph input, each in its backbone
    part's preprocessing."""
    return check_images(images, [part.preprocessing for part in contents.backbone.members])
