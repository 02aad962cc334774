"""Dynamic int8 quantization of an exported model (onnxruntime.quantization.quantize_dynamic).

Only MatMul/Gemm weights are quantized.  Measured on mobilenet_v2 (batch 32, 2 threads, this
project's CPU): with Conv added, dynamic quantization turns every convolution into ConvInteger,
which ran ~10x slower (24.5 -> 2.5 img/s) and moved the features by up to 0.73; so Conv stays
float32.  See ``benchmarks/export.py`` for the whole-model figures.  The OOD score's matmul (the
nodes the exporter names under ``/ood/``) stays float32 too: its scores are compared with a
threshold set in float32, and an int8 bank would move them.

A text model's copy is quantized per channel (one scale per output column of each weight): on
banking77 (MiniLM-L6 + logistic head, 770 test texts) per-tensor scales kept 96.2% of the
float32 answers and cost 1.3 points of accuracy (93.0% -> 91.7%), per-channel scales kept 98.8%
and cost 0.4 (-> 92.6%); the file shrinks from 90 to 59 MB (the token embedding table, a
Gather, stays float32).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from headstart.fsutil import FILE_MODE

__all__ = ["INT8_OP_TYPES", "QUANTIZATIONS", "quantize_int8"]

QUANTIZATIONS = ("int8",)
INT8_OP_TYPES = ("MatMul", "Gemm")
#: Nodes whose names start with this stay float32 (the OOD scorer's, see the module docstring).
FLOAT_SCOPE = "/ood/"


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    # quantize_dynamic logs a "consider pre-processing" WARNING on the root logger every call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(source: Path, dest: Path, *, per_channel: bool = False) -> Path:
    """Write ``source`` (a float32 ONNX model) with int8 MatMul/Gemm weights to ``dest``,
    atomically; the metadata_props are kept.  ``per_channel``: one scale per output column
    (text models, see the module doc) instead of one per weight."""
    # lazy: onnx/onnxruntime take a second to import; only this path needs them
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    keep = [n.name for n in onnx.load(str(source)).graph.node if n.name.startswith(FLOAT_SCOPE)]
    try:
        with _quiet_root_logger():
            quantize_dynamic(
                str(source),
                tmp,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=list(INT8_OP_TYPES),
                nodes_to_exclude=keep,
                per_channel=per_channel,
            )
        _copy_metadata(onnx.load(str(source)), Path(tmp))
        os.chmod(tmp, FILE_MODE)  # mkstemp's 0600 -> the mode of the bundle's other files
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def _copy_metadata(source: object, path: Path) -> None:
    # lazy: onnx/onnxruntime take a second to import; only this path needs them
    import onnx

    props = {p.key: p.value for p in getattr(source, "metadata_props", [])}
    model = onnx.load(str(path))
    have = {p.key for p in model.metadata_props}
    missing = {k: v for k, v in props.items() if k not in have}
    if not missing:
        return
    for key, value in missing.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
