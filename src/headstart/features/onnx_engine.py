"""Fast CPU inference: export a backbone's feature output to ONNX once, run it with ONNX Runtime.

The export is cached beside the embeddings (``<store root>/onnx/<model key>.onnx``) so later
runs need neither torch nor the model build: only onnxruntime.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.fsutil import read_entry, seal

if TYPE_CHECKING:
    from torch import nn

    from headstart.backbones.model import Backbone

__all__ = [
    "OnnxFeatures",
    "cached_export",
    "export_onnx",
    "onnxruntime_available",
    "physical_cores",
]

INPUT_NAME = "images"
OUTPUT_NAME = "features"


def onnxruntime_available() -> bool:
    """True when onnxruntime is installed here (found, not imported: a fully cached run never
    needs its half second of import)."""
    return importlib.util.find_spec("onnxruntime") is not None


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads share one core's arithmetic units)."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores: set[str] = set()
    for cpu in allowed:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_cpus_list")
        try:
            cores.add(topo.read_text().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def export_onnx(
    model: Backbone | nn.Module,
    path: Path,
    opset: int = 17,
    *,
    output_name: str = OUTPUT_NAME,
    metadata: Mapping[str, str] | None = None,
    inputs: Mapping[str, int] | None = None,
) -> Path:
    """Export ``model.forward`` (preprocessed images (N, 3, crop, crop) -> one (N, K) output) with
    a dynamic batch axis: a :class:`Backbone` (pooled features, the embedding engine) or a whole
    classifier (:mod:`headstart.export`: backbone -> head -> probabilities).  ``model`` carries
    the ``preprocessing`` it expects (its crop sets the input size); ``metadata`` is stored in
    the file's ``metadata_props``.  ``inputs``: the graph's inputs by name with their crop
    sizes, in ``forward``'s argument order, for a model of several image inputs (a fused
    backbone's classifier); default: one input ``images`` of the model's crop.  This is the
    project's one ONNX export path.

    Written to a temp file and renamed, so a crash never leaves a half-written model.
    """
    # lazy: torch takes seconds to import; only this path needs it
    import torch

    if inputs is None:
        preprocessing = getattr(model, "preprocessing", None)
        if preprocessing is None:
            raise TypeError(f"{type(model).__name__} has no .preprocessing to size its input from")
        inputs = {INPUT_NAME: int(preprocessing.crop)}
    examples = tuple(torch.zeros(2, 3, size, size) for size in inputs.values())
    names = list(inputs)
    axes = {name: {0: "batch"} for name in [*names, output_name]}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # exporter deprecation chatter is not the user's
            torch.onnx.export(
                model.eval(),
                examples,
                tmp,
                input_names=names,
                output_names=[output_name],
                dynamic_axes=axes,
                opset_version=opset,
                dynamo=False,
            )
        if metadata:
            _set_metadata(Path(tmp), metadata)
        os.replace(tmp, path)
    except OSError as exc:  # a full or read-only disk: name the file being written
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _set_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    # lazy: onnx/onnxruntime take a second to import; only this path needs them
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def cached_export(path: Path, export: Callable[[Path], object]) -> bytes | None:
    """The bytes of the cached ONNX file at ``path``, checked against the digest recorded when
    it was written; a missing, unfinished or damaged one is exported again by ``export(path)``
    (then sealed; None when ``export`` returns False: nothing to export).  Sessions are built
    from these bytes, so what runs is what was checked."""
    model = read_entry(path)
    if model is None:
        if export(path) is False:
            return None
        model = path.read_bytes()
        seal(path, hashlib.sha256(model).hexdigest())
    return model


class OnnxFeatures:
    """An ONNX Runtime session computing features for float32 (N, 3, H, W) batches, from an
    ONNX file or its bytes."""

    def __init__(
        self, model: Path | bytes, threads: int | None = None, spinning: bool = True
    ) -> None:
        # lazy: onnx/onnxruntime take a second to import; only this path needs them
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or physical_cores()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Busy-waiting threads steal the cores decode workers need between batches.
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        self.session: Any = ort.InferenceSession(
            model if isinstance(model, bytes) else str(model),
            options,
            providers=["CPUExecutionProvider"],
        )

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The model's one output (N, D) float32 (features, or probabilities for a whole-model
        export) for a batch (N, 3, H, W) float32."""
        out = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(batch)})
        return np.asarray(out[0], dtype=np.float32)
