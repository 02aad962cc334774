"""Grad-CAM without torch for the common case: a head linear in average-pooled features (the
default logistic probe, and every fine-tuned model's exported head).

Then Grad-CAM's channel weights, the spatial mean of d(logit)/d(activation), are the head's
own weights divided by the map's area, so the map is ``ReLU(sum_k w_ck A_k)`` (Zhou et al.'s
CAM) up to a scale that Grad-CAM's normalisation removes.  The activations ``A`` of the layer
Grad-CAM reads come from an ONNX export of the backbone cut there, made once (with torch) and
cached beside the backbone's own export; after that an explanation needs onnxruntime and numpy
only.  Backbones whose pooled features are not the spatial mean of that layer (vision
transformers) and heads that are not linear (kNN, MLP) go back to the torch path.
"""

from __future__ import annotations

import hashlib
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from headstart.data import Task
from headstart.explain.explanation import Explanation
from headstart.explain.overlay import blend, crop_rgb
from headstart.features import model_key
from headstart.features.onnx_engine import OnnxFeatures, cached_export, export_onnx
from headstart.fsutil import read_entry, write_entry

if TYPE_CHECKING:
    from headstart.backbones import BackboneRef
    from headstart.model import Model

__all__ = ["activation_runner", "explain_linear", "linear_path"]

_FORMAT = 1  # bump when the export or its check changes: it keys the cached file
Runner = Callable[[np.ndarray], np.ndarray]

# One runner (an onnxruntime session) per Model, None included, made on first use.
_RUNNERS: weakref.WeakKeyDictionary[Model, Runner | None] = weakref.WeakKeyDictionary()
_RUNNERS_LOCK = threading.Lock()


def _export(ref: BackboneRef, path: Any) -> bool:
    """Export the backbone cut at its CAM layer; False when that layer's spatial mean is not
    the backbone's pooled features (the CAM would not be Grad-CAM)."""
    # torch builds the export once per backbone; every later explanation reads the file
    import torch

    # lazy: torch takes seconds to import; only this path needs it
    from headstart.explain.layers import cam_layer

    backbone = ref.build()
    layer = cam_layer(backbone.model, backbone.library)
    if layer.reshape is not None:
        return False
    seen: list[torch.Tensor] = []

    class Activations(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.preprocessing = backbone.preprocessing
            layer.module.register_forward_hook(lambda _m, _i, out: seen.append(out))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.clear()
            self.backbone(x)
            return seen[-1]

    module = Activations().eval()
    crop = backbone.preprocessing.crop
    with torch.no_grad():
        x = torch.randn(2, 3, crop, crop)
        acts, pooled = module(x), backbone(x)
    if acts.dim() != 4 or not torch.allclose(acts.mean(dim=(2, 3)), pooled, atol=1e-4):
        return False
    export_onnx(module, path, output_name="activations")
    return True


def activation_runner(model: Model) -> Runner | None:
    """The cached activation export of the model's backbone (made on first use), or None when
    its CAM layer does not feed the pooled features directly.  Kept per model (weakly), so
    explaining many images opens one onnxruntime session."""
    with _RUNNERS_LOCK:
        if model not in _RUNNERS:
            _RUNNERS[model] = _open_runner(model)
        return _RUNNERS[model]


def linear_path(model: Model, task: Task) -> bool:
    """Whether Grad-CAM of ``task`` runs through onnxruntime (:func:`explain_linear`): a head
    linear in the pooled features and a backbone whose CAM layer feeds them directly (never a
    fused backbone's: it has no one CAM layer)."""
    if model.backbone_ref.is_fused:
        return False
    return model.linear_weights(task.name) is not None and activation_runner(model) is not None


def _open_runner(model: Model) -> Runner | None:
    base = model_key(model.backbone_ref, "onnx")
    key = hashlib.sha256(f"{base}|cam-activations|{_FORMAT}".encode()).hexdigest()[:24]
    path = model.cache.store.onnx_path(key)
    refused = path.with_suffix(".not-pooled")
    if read_entry(refused) is not None:
        return None
    onnx = cached_export(path, lambda target: _export(model.backbone_ref, target))
    if onnx is None:
        write_entry(refused, b"the CAM layer's spatial mean is not the pooled features\n")
        return None
    return OnnxFeatures(onnx)


def _heatmap(weights: np.ndarray, acts: np.ndarray, size: int) -> np.ndarray:
    """ReLU of the weighted activations, scaled to [0, 1] and resized (bilinear) to the crop,
    in pytorch_grad_cam's order."""
    cam = np.maximum(np.tensordot(weights, acts, axes=1), 0.0).astype(np.float32)
    cam -= cam.min()
    cam /= 1e-7 + cam.max()
    image = Image.fromarray(cam, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


def explain_linear(
    model: Model, task: Task, images: Sequence[Image.Image], target: int | None = None
) -> list[Explanation] | None:
    """Grad-CAM of ``task`` (its predicted class, or ``target``) for decoded images through
    onnxruntime; None when the head or backbone needs the torch path."""
    weights = None if model.backbone_ref.is_fused else model.linear_weights(task.name)
    runner = activation_runner(model) if weights is not None else None
    if weights is None or runner is None:  # the same test as linear_path
        return None
    prep = model.backbone_ref.preprocessing
    batch = np.stack([prep(image) for image in images])
    acts = runner(batch).astype(np.float64)
    proba = model.proba_from_features(acts.mean(axis=(2, 3)))[task.name]
    out = []
    for i in range(len(images)):
        predicted = int(np.argmax(proba[i]))
        index = predicted if target is None else target
        heatmap = _heatmap(weights[index], acts[i], prep.crop)
        out.append(
            Explanation(
                heatmap=heatmap,
                overlay=blend(crop_rgb(batch[i], prep), heatmap),
                label=task.classes[index],
                probability=float(proba[i, index]),
                predicted=task.classes[predicted],
                predicted_probability=float(proba[i, predicted]),
                method="gradcam",
                task=task.name,
            )
        )
    return out
