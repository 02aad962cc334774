"""The whole model (backbone -> head -> softmax) as one ONNX graph, checked against torch.

``export_model`` builds the classifier in torch (the bundle's backbone plus
:func:`~headstart.heads.torch_head.head_to_torch`), exports it through the project's one export
path (:func:`headstart.features.onnx_engine.export_onnx`), runs the file with onnxruntime on real
images and compares the probabilities with torch's.  The file gets its final name only after
that check passes.  The preprocessing the input needs is written beside the model
(``model.onnx.json``) and stored in the model's own ``metadata_props``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.bundle import BundleContents, read_bundle
from headstart.errors import ConfigError, HeadstartError
from headstart.export.images import CheckImages, Images, accuracy, check_images
from headstart.export.quantize import QUANTIZATIONS, quantize_int8
from headstart.fsutil import atomic_write_text

if TYPE_CHECKING:
    from headstart.export.torch_model import Classifier

__all__ = [
    "EXPORT_FORMATS",
    "OUTPUT_NAME",
    "ExportError",
    "ExportResult",
    "Int8Report",
    "describe",
    "export_model",
    "onnx_probabilities",
]

EXPORT_FORMATS = ("onnx",)
OUTPUT_NAME = "probabilities"
METADATA_KEY = "headstart"
DOC_FORMAT = "headstart-onnx"
OPSET = 17
_BATCH = 32


class ExportError(HeadstartError, RuntimeError):
    """An exported model does not reproduce the bundle's predictions within the tolerance."""


@dataclass(frozen=True)
class Int8Report:
    """The int8 model against the float32 one on the same check images."""

    path: Path
    max_abs_diff: float
    top1_agreement: float
    accuracy_fp32: float
    accuracy_int8: float
    n_labelled: int


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and how well it matches torch."""

    path: Path
    metadata_path: Path
    n_check_images: int
    max_abs_diff: float  # onnxruntime vs torch eager, whole model, probabilities
    head_max_abs_diff: float  # torch head module vs the bundle's numpy head, same features
    tolerance: float
    seconds: float
    int8: Int8Report | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (paths as strings)."""
        d = asdict(self)
        d["path"], d["metadata_path"] = str(self.path), str(self.metadata_path)
        if self.int8 is not None:
            d["int8"]["path"] = str(self.int8.path)
        return d


def describe(contents: BundleContents, opset: int = OPSET) -> dict[str, Any]:
    """The document that says how to call the exported model (input, preprocessing, classes)."""
    prep = contents.backbone.preprocessing
    classes = contents.classes
    return {
        "format": DOC_FORMAT,
        "format_version": 1,
        "input": {
            "name": "images",
            "dtype": "float32",
            "shape": ["batch", 3, prep.crop, prep.crop],
            "layout": "NCHW, RGB channels",
        },
        "output": {
            "name": OUTPUT_NAME,
            "dtype": "float32",
            "shape": ["batch", len(classes)],
            "meaning": "class probabilities (softmax), columns in the order of 'classes'",
        },
        "classes": classes,
        "preprocessing": {
            **prep.to_dict(),
            "steps": [
                "decode the image and convert it to RGB (apply its EXIF orientation)",
                f"resize so the shorter side is {prep.resize} px ({prep.interpolation})",
                f"center-crop {prep.crop} x {prep.crop}",
                "scale pixel values to [0, 1], subtract mean and divide by std per channel",
                "transpose HWC -> CHW and stack images into a float32 batch",
            ],
        },
        "opset": opset,
        "backbone": {"name": contents.backbone.name, "sha256": contents.backbone.weights_sha256},
        "head": {"kind": contents.info.get("head", {}).get("kind")},
        "bundle": {"head_sha256": contents.info.get("files", {}).get("head.safetensors")},
        "usage": [
            "headstart predict MODEL_DIR IMAGES --runtime onnx",
            "python: session = onnxruntime.InferenceSession('model.onnx'); "
            "p = session.run(None, {'images': batch})[0]  # batch preprocessed as above",
        ],
    }


def onnx_probabilities(path: Path, batch: np.ndarray) -> np.ndarray:
    """Run an exported model with onnxruntime on a preprocessed batch, in chunks."""
    from headstart.features.onnx_engine import OnnxFeatures

    session = OnnxFeatures(path)
    chunks = [session(batch[i : i + _BATCH]) for i in range(0, len(batch), _BATCH)]
    return np.concatenate(chunks).astype(np.float64)


def _torch_probabilities(
    module: Classifier, contents: BundleContents, batch: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(torch eager probabilities, the bundle's numpy head on the same torch features)."""
    import torch

    probs, feats = [], []
    with torch.inference_mode():
        for i in range(0, len(batch), _BATCH):
            x = torch.from_numpy(batch[i : i + _BATCH])
            f = module.backbone(x)
            probs.append(torch.softmax(module.logits(f), dim=1).double().numpy())
            feats.append(f.float().numpy())
    head = contents.head
    order = [list(head.classes_).index(c) for c in contents.classes]
    reference = np.asarray(head.predict_proba(np.concatenate(feats)))[:, order]
    return np.concatenate(probs), reference


def _validate(fmt: str, quantize: str | None, tolerance: float) -> None:
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'; valid: {', '.join(EXPORT_FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantization '{quantize}'; valid: {', '.join(QUANTIZATIONS)}")
    if not tolerance >= 0:
        raise ConfigError(f"tolerance must be >= 0, got {tolerance}")


def _temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _metadata(doc: Mapping[str, Any]) -> dict[str, str]:
    return {
        METADATA_KEY: json.dumps(doc, sort_keys=True),
        "classes": json.dumps(doc["classes"]),
        "preprocessing": json.dumps(doc["preprocessing"], sort_keys=True),
    }


def _int8(path: Path, fp32: np.ndarray, checks: CheckImages, classes: list[str]) -> Int8Report:
    dest = path.with_name(f"{path.name.removesuffix('.onnx')}.int8.onnx")
    tmp = _temp_beside(dest)
    try:
        quantize_int8(path, tmp)
        int8 = onnx_probabilities(tmp, checks.batch)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return Int8Report(
        path=dest,
        max_abs_diff=float(np.max(np.abs(int8 - fp32))),
        top1_agreement=float(np.mean(np.argmax(int8, 1) == np.argmax(fp32, 1))),
        accuracy_fp32=accuracy(fp32, checks.labels, classes),
        accuracy_int8=accuracy(int8, checks.labels, classes),
        n_labelled=checks.n_labelled,
    )


def export_model(
    bundle_path: str | Path,
    *,
    fmt: str = "onnx",
    output: str | Path | None = None,
    quantize: str | None = None,
    check_images: Images | None = None,
    tolerance: float = 1e-4,
) -> ExportResult:
    """Export a bundle as one ONNX graph (default ``BUNDLE/model.onnx``) and check it.

    ``check_images``: files or folders of real images for the parity check (default: the bundled
    demo test photos); images in a folder named after a class also count for accuracy.  Raises
    :class:`ExportError` (and leaves no file behind) when the onnxruntime probabilities differ
    from torch's by more than ``tolerance``.  ``quantize="int8"`` also writes
    ``model.int8.onnx`` and reports its accuracy change.
    """
    _validate(fmt, quantize, tolerance)
    start = time.perf_counter()
    bundle_path = Path(bundle_path)
    contents = read_bundle(bundle_path)
    if contents.tasks:
        raise ConfigError(
            "export supports single-task, single-label models; this model has tasks "
            f"{', '.join(t.name for t in contents.tasks)} (use predict or evaluate)"
        )
    path = Path(output) if output is not None else bundle_path / "model.onnx"
    checks = check_images_for(contents, check_images)
    from headstart.export.torch_model import build_torch_model

    module = build_torch_model(contents)
    eager, reference = _torch_probabilities(module, contents, checks.batch)
    doc = describe(contents)
    tmp = _temp_beside(path)
    try:
        from headstart.features.onnx_engine import export_onnx

        export_onnx(module, tmp, OPSET, output_name=OUTPUT_NAME, metadata=_metadata(doc))
        fp32 = onnx_probabilities(tmp, checks.batch)
        diff = float(np.max(np.abs(fp32 - eager)))
        head_diff = float(np.max(np.abs(eager - reference)))
        _check_parity(diff, head_diff, tolerance, len(checks.paths))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    doc["parity"] = {"images": len(checks.paths), "max_abs_diff": diff, "tolerance": tolerance}
    report = _int8(path, fp32, checks, contents.classes) if quantize == "int8" else None
    if report is not None:
        doc["int8"] = {k: v for k, v in asdict(report).items() if k != "path"}
        doc["int8"]["file"] = report.path.name
    meta_path = path.with_name(path.name + ".json")
    atomic_write_text(meta_path, json.dumps(doc, indent=2) + "\n")
    return ExportResult(
        path, meta_path, len(checks.paths), diff, head_diff, tolerance,
        time.perf_counter() - start, report,
    )  # fmt: skip


def check_images_for(contents: BundleContents, images: Images | None) -> CheckImages:
    """The decoded check images for a bundle (its preprocessing and classes)."""
    return check_images(images, contents.backbone.preprocessing, contents.classes)


def _check_parity(diff: float, head_diff: float, tolerance: float, n: int) -> None:
    if diff > tolerance:
        raise ExportError(
            f"ONNX export does not match torch: max abs probability difference {diff:.3g} "
            f"on {n} images exceeds the tolerance {tolerance:g}; the file was not written"
        )
    if head_diff > tolerance:
        raise ExportError(
            f"the torch head differs from the bundle's head by {head_diff:.3g} (tolerance "
            f"{tolerance:g}) on {n} images; the file was not written"
        )
