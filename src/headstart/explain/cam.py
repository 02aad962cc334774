"""Class activation maps (Grad-CAM, Grad-CAM++, EigenCAM) for a bundled model.

The differentiable model is the bundle's backbone followed by :func:`head_to_torch`, so the map
explains exactly the probabilities ``Model.predict`` reports.  Grad-CAM of a head linear in
average-pooled features needs no gradients and runs through onnxruntime
(:mod:`headstart.explain.linear`).  It is built once per
:class:`~headstart.Model` and kept (weakly keyed on the model), so explaining many images pays
for the build once.  The CAM itself comes from the ``grad-cam`` library (pytorch_grad_cam).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from headstart.backbones import require_single
from headstart.data import load_rgb
from headstart.data.manifest import Task
from headstart.errors import BackboneError, ConfigError, HeadstartError, ImageError
from headstart.explain.explanation import Explanation
from headstart.explain.linear import explain_linear, linear_path
from headstart.explain.overlay import blend, crop_rgb

if TYPE_CHECKING:
    import torch
    from torch import nn

    from headstart.backbones import Preprocessing
    from headstart.explain.layers import CamLayer
    from headstart.model import Model

__all__ = [
    "METHODS",
    "Explanation",
    "ImageInput",
    "explain",
    "explain_many",
    "require_explainable",
]

#: The CAM methods by name; "eigencam" needs no gradients (first principal component of the
#: layer's activations, so it shows what the layer sees, not which class it argues for).
METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "eigencam")
#: Images pushed through the network together by :func:`explain_many`.
BATCH_SIZE = 8

ImageInput = str | Path | Image.Image


@dataclass
class _Prepared:
    """The differentiable model of one :class:`Model` and task, built once."""

    network: nn.Module
    layer: CamLayer
    preprocessing: Preprocessing
    task: Task
    # CAM hooks live on the model's shared layer: one explanation at a time per model.
    lock: threading.Lock


@dataclass
class _Shared:
    """One :class:`Model`'s backbone and CAM layer, shared by its tasks' networks."""

    backbone: nn.Module
    layer: CamLayer
    preprocessing: Preprocessing
    lock: threading.Lock


_PREPARED: weakref.WeakKeyDictionary[Model, dict[str, _Prepared]] = weakref.WeakKeyDictionary()
_SHARED: weakref.WeakKeyDictionary[Model, _Shared] = weakref.WeakKeyDictionary()
_PREPARE_LOCK = threading.Lock()


def _check_method(method: str) -> str:
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ConfigError(f"unknown explain method {method!r}; valid: {', '.join(METHODS)}")
    return method.lower()


def require_explainable(model: Model) -> None:
    """A one-line error when Grad-CAM cannot explain the model: its backbone is a fusion (a
    class activation map is one network's layer, and a fused model has several, each with its
    own input), or a task's head passes no gradient (tree heads: ``hgb``, ``lightgbm``)."""
    ref = model.backbone_ref
    parts = ", ".join(p.name for p in ref.parts)
    require_single(ref, "Grad-CAM", f"explain a model fitted on one of its parts ({parts})")
    for task in model.tasks:
        if not _differentiable(model.heads[task.name]):
            raise ConfigError(
                f"Grad-CAM needs gradients through the head; the {task.name!r} head is "
                f"{_kind(model.heads[task.name])}, whose trees pass none: explain a model with a "
                "logistic, mlp or knn head"
            )


_TREES = ("hgb", "lightgbm")


def _kind(head: object) -> str:
    return str(getattr(head, "kind", type(head).__name__))


def _differentiable(head: object) -> bool:
    """Whether gradients reach the features through ``head`` (any member of a composite)."""
    kind = _kind(head)
    if kind in _TREES:
        return False
    if kind == "bagging":
        return str(getattr(head, "base", "")) not in _TREES
    inner = getattr(head, "members_", None) or getattr(head, "estimators_", None)
    if inner:  # an ensemble's members, a multi-label head's per-label heads
        return any(_differentiable(h) for h in inner)
    return True


def _target_index(task: Task, target: str | None) -> int | None:
    if target is None:
        return None
    if target not in task.classes:
        raise ConfigError(
            f"unknown target class {target!r}; the classes of '{task.name}': "
            f"{', '.join(task.classes)}"
        )
    return task.classes.index(target)


def _prepare(model: Model, task: Task) -> _Prepared:
    with _PREPARE_LOCK:
        per_task = _PREPARED.setdefault(model, {})
        prepared = per_task.get(task.name)
        if prepared is None:
            prepared = _build(model, task)
            per_task[task.name] = prepared
        return prepared


def _build(model: Model, task: Task) -> _Prepared:
    """The network of one task: the model's shared backbone and the task's head (called under
    ``_PREPARE_LOCK``)."""
    # torch and the CAM library load on the first explanation, never on import
    from torch import nn

    from headstart.heads.torch_head import task_module

    shared = _SHARED.get(model)
    if shared is None:
        shared = _SHARED[model] = _build_backbone(model)
    network = nn.Sequential(shared.backbone, task_module(task, model.heads[task.name])).eval()
    # Gradients are wanted w.r.t. activations only, never the weights.
    for param in network.parameters():
        param.requires_grad_(False)
    return _Prepared(network, shared.layer, shared.preprocessing, task, shared.lock)


def _build_backbone(model: Model) -> _Shared:
    # lazy: torch takes seconds to import; only this path needs it
    from headstart.explain.layers import cam_layer

    backbone = model.backbone_ref.build()
    layer = cam_layer(backbone.model, backbone.library)
    return _Shared(backbone, layer, backbone.preprocessing, threading.Lock())


def _decode(image: Any, preprocessing: Preprocessing) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, str | Path):
        try:
            return load_rgb(Path(image), draft_size=preprocessing.resize)
        except ImageError as exc:
            raise ImageError(f"{image}: {exc}") from None
    raise ConfigError(f"explain needs an image path or a PIL image; got {type(image).__name__}")


def _cam_class(method: str) -> Any:
    # lazy: torch takes seconds to import; only this path needs it
    from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus

    return {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM}[method]


def _run_cam(
    prepared: _Prepared, batch: torch.Tensor, method: str, target: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """CAMs (N, H, W) and the task's probabilities (N, C) for a preprocessed batch."""
    # lazy: torch takes seconds to import; only this path needs it
    import torch
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam = _cam_class(method)(
        model=prepared.network,
        target_layers=[prepared.layer.module],
        reshape_transform=prepared.layer.reshape,
    )
    # With frozen weights, gradients reach the layer only if the input asks for them.
    batch = batch.detach().requires_grad_(method != "eigencam")
    targets = None if target is None else [ClassifierOutputTarget(target)] * len(batch)
    try:
        with prepared.lock:
            maps = cam(input_tensor=batch, targets=targets)
            logits = cam.outputs.detach()
    finally:
        cam.activations_and_grads.release()
    scores = logits.double()
    proba = scores.sigmoid() if prepared.task.multi_label else torch.softmax(scores, dim=1)
    return np.clip(np.asarray(maps, dtype=np.float32), 0.0, 1.0), proba.numpy()


def _explain_images(
    model: Model, task: Task, images: Sequence[Image.Image], method: str, target: int | None
) -> list[Explanation]:
    if method == "gradcam" and linear_path(model, task):
        # a linear head: the same map through onnxruntime, no torch
        fast = explain_linear(model, task, images, target)
        if fast is not None:
            return fast
    return _explain_torch(model, task, images, method, target)


def _explain_torch(
    model: Model, task: Task, images: Sequence[Image.Image], method: str, target: int | None
) -> list[Explanation]:
    # lazy: torch takes seconds to import; only this path needs it
    import torch

    prepared = _prepare(model, task)
    prep = prepared.preprocessing
    batch = torch.from_numpy(np.stack([prep(image) for image in images]))
    maps, raw = _run_cam(prepared, batch, method, target)
    proba = model.calibrated(task.name, raw)  # the probabilities predict reports
    out = []
    for i in range(len(images)):
        predicted = int(np.argmax(proba[i]))
        index = predicted if target is None else target
        heatmap = maps[i]
        out.append(
            Explanation(
                heatmap=heatmap,
                overlay=blend(crop_rgb(batch[i].detach().numpy(), prep), heatmap),
                label=task.classes[index],
                probability=float(proba[i, index]),
                predicted=task.classes[predicted],
                predicted_probability=float(proba[i, predicted]),
                method=method,
                task=task.name,
            )
        )
    return out


def explain(
    model: Model,
    image: ImageInput,
    *,
    method: str = "gradcam",
    target: str | None = None,
    task: str | None = None,
) -> Explanation:
    """A class activation map of ``image`` (a path or a PIL image) for ``model``.

    ``method``: one of :data:`METHODS`.  ``task``: the task to explain (default: the first).
    ``target``: the class (or label) to explain (default: the most probable one).  Unknown
    methods, tasks or classes raise :class:`~headstart.errors.ConfigError`; an unreadable image
    raises :class:`~headstart.errors.ImageError`.
    """
    method = _check_method(method)
    require_explainable(model)
    chosen = model.task(task)
    target_index = _target_index(chosen, target)
    decoded = _decode(image, model.backbone_ref.preprocessing)
    return _explain_images(model, chosen, [decoded], method, target_index)[0]


def explain_many(
    model: Model,
    images: Sequence[ImageInput],
    *,
    method: str = "gradcam",
    target: str | None = None,
    task: str | None = None,
) -> list[Explanation | HeadstartError]:
    """:func:`explain` for several images, batched; one result per image, in order.

    An image that cannot be read gives its :class:`~headstart.errors.HeadstartError` in its
    place instead of stopping the others; a bad ``method``, ``task`` or ``target`` raises at
    once.  A fused backbone's model gives every image the same ``BackboneError`` (Grad-CAM
    needs one network), so a report's gallery notes it beside each photo.
    """
    method = _check_method(method)
    chosen = model.task(task)
    target_index = _target_index(chosen, target)
    try:
        require_explainable(model)
    except BackboneError as exc:
        return [exc for _ in images]
    prep = model.backbone_ref.preprocessing
    results: dict[int, Explanation | HeadstartError] = {}
    for start in range(0, len(images), BATCH_SIZE):
        decoded: dict[int, Image.Image] = {}
        for i in range(start, min(start + BATCH_SIZE, len(images))):
            try:
                decoded[i] = _decode(images[i], prep)
            except HeadstartError as exc:
                results[i] = exc
        if decoded:
            explained = _explain_images(model, chosen, list(decoded.values()), method, target_index)
            results.update(zip(decoded, explained, strict=True))
    return [results[i] for i in range(len(images))]
