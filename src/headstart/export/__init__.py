"""Export a fitted model as one ONNX graph (backbone -> every task's head -> probabilities, one
output per task, and the OOD score), check it against torch on real images, optionally quantize
it to int8, and predict with it in onnxruntime.  A text model's graph takes token ids and an
attention mask; its tokenizer is written beside it (:mod:`headstart.export.text_export`).

>>> from headstart.export import export_model           # doctest: +SKIP
>>> result = export_model("runs/x/model", quantize="int8")
>>> result.path, result.max_abs_diff, result.int8.accuracy_int8
"""

from __future__ import annotations

from headstart.export.document import OUTPUT_NAME, describe, output_names
from headstart.export.onnx_model import (
    EXPORT_FORMATS,
    ExportError,
    ExportResult,
    Int8Report,
    OodParity,
    TaskInt8,
    TaskParity,
    export_model,
)
from headstart.export.quantize import QUANTIZATIONS, quantize_int8
from headstart.export.runtime import OnnxClassifier, load_onnx, read_metadata

__all__ = [
    "EXPORT_FORMATS",
    "OUTPUT_NAME",
    "QUANTIZATIONS",
    "ExportError",
    "ExportResult",
    "Int8Report",
    "OnnxClassifier",
    "OodParity",
    "TaskInt8",
    "TaskParity",
    "describe",
    "export_model",
    "load_onnx",
    "output_names",
    "quantize_int8",
    "read_metadata",
]
