"""The exported graph's plumbing shared by image and text exports: running it in chunks,
splitting its one joined output into one per task (and the OOD score), and writing files
atomically with the bundle's file mode."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart.data.manifest import Task
from headstart.export.document import OOD_OUTPUT, output_names
from headstart.features.onnx_engine import OnnxFeatures
from headstart.fsutil import FILE_MODE

__all__ = [
    "BATCH",
    "JOINED",
    "json_text",
    "onnx_probabilities",
    "ood_column",
    "publish",
    "split_outputs",
    "temp_beside",
]

#: Rows per onnxruntime run.
BATCH = 32
#: The exporter's one output of a several-task model before it is split into one per task (a
#: name no task output can have: those all start with "probabilities").
JOINED = "joined_probabilities"


def onnx_probabilities(path: Path, batches: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Run an exported model with onnxruntime on a preprocessed batch (one per graph input, in
    the graph's input order, for a fused backbone), in chunks: every output side by side
    (N, sum of widths), in the graph's output order (= task order, then the OOD score's one
    column when the graph has it)."""
    session = OnnxFeatures(path).session
    inputs = [batches] if isinstance(batches, np.ndarray) else list(batches)
    names = [i.name for i in session.get_inputs()]
    chunks = []
    for i in range(0, len(inputs[0]), BATCH):
        feed = {
            name: np.ascontiguousarray(batch[i : i + BATCH])
            for name, batch in zip(names, inputs, strict=True)
        }
        outputs = session.run(None, feed)
        columns = [np.asarray(o).reshape(len(o), -1) for o in outputs]
        chunks.append(np.concatenate(columns, axis=1))
    return np.concatenate(chunks).astype(np.float64)


def ood_column(outputs: np.ndarray, tasks: Sequence[Task]) -> np.ndarray | None:
    """The OOD scores after the tasks' columns (None when the graph has none)."""
    width = sum(len(t.classes) for t in tasks)
    return outputs[:, width] if outputs.shape[1] > width else None


def split_outputs(path: Path, tasks: Sequence[Task], ood: bool) -> None:
    """Turn the exporter's one joined output into one graph output per task (an ONNX Split on
    the class axis), named by :func:`~headstart.export.document.output_names`, and with
    ``ood`` the last column into the (N,) output ``ood_score``."""
    # lazy: onnx/onnxruntime take a second to import; only this path needs them
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load(str(path))
    graph = proto.graph
    (joined,) = [o.name for o in graph.output]
    widths = [len(t.classes) for t in tasks] + ([1] if ood else [])
    sizes = numpy_helper.from_array(np.asarray(widths, dtype=np.int64), "headstart_task_widths")
    graph.initializer.append(sizes)
    names = output_names(tasks)
    parts = names + ([f"{OOD_OUTPUT}_column"] if ood else [])
    graph.node.append(
        helper.make_node("Split", [joined, sizes.name], parts, axis=1, name="headstart_tasks")
    )
    del graph.output[:]
    graph.output.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", width])
        for name, width in zip(names, widths, strict=False)
    )
    if ood:
        axes = numpy_helper.from_array(np.asarray([1], dtype=np.int64), "headstart_ood_axes")
        graph.initializer.append(axes)
        graph.node.append(
            helper.make_node(
                "Squeeze", [parts[-1], axes.name], [OOD_OUTPUT], name="headstart_ood_score"
            )
        )
        graph.output.append(helper.make_tensor_value_info(OOD_OUTPUT, TensorProto.FLOAT, ["batch"]))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def temp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def publish(tmp: Path, path: Path) -> None:
    """Give a finished temp file its final name, with the mode of the bundle's other files
    (mkstemp makes it private, 0600)."""
    os.chmod(tmp, FILE_MODE)
    os.replace(tmp, path)


def json_text(doc: Mapping[str, Any]) -> str:
    """The document as indented JSON (NaN, for a figure not measured, is written as null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, float) and math.isnan(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(doc), indent=2) + "\n"
