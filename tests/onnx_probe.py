"""A head's torch module through ONNX Runtime, as ``headstart export`` runs it: the
probabilities its exported graph gives (shared by the head kinds' parity tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def onnx_proba(module: torch.nn.Module, queries: np.ndarray, path: Path) -> np.ndarray:
    """Export ``module`` (traced on two rows), run it on every row of ``queries`` (a batch
    size other than the traced one) and return the softmax of its logits."""
    import onnxruntime as ort

    torch.onnx.export(
        module,
        (torch.from_numpy(queries[:2]),),
        str(path),
        input_names=["features"],
        output_names=["logits"],
        dynamic_axes={"features": {0: "n"}, "logits": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"features": queries})
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    proba: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
    return proba
