"""A fitted head as a torch module: features (N, D) float32 in, class logits (N, C) out.

``softmax(head_to_torch(head)(features))`` equals ``head.predict_proba(features)`` (columns in
``head.classes_`` order, or in the order asked for).  The module is built from
:func:`~headstart.heads.export_head` arrays, so a head imported from a bundle converts exactly
like the one that was fitted.  It is what makes a bundled model differentiable (Grad-CAM) and
exportable as one ONNX graph: only matmul, elementwise ops, ``topk``, ``argmax`` and gather are
used.  Tree heads (``hgb``, ``lightgbm``) use the GEMM strategy of Microsoft's hummingbird: one
gather-and-compare for every internal node of every tree, a batched matmul with each tree's
path matrix to find the leaf, leaf values summed per class.  Their thresholds are rounded down
to float32, so ``x <= threshold`` decides exactly as the head does for float32 features (trees
pass no gradient).  Composite heads (bagging, ensembles) combine their members' modules and
return log-probabilities, floored like the kNN module's.

>>> module = head_to_torch(head)             # doctest: +SKIP
>>> torch.softmax(module(x), dim=1)          # == head.predict_proba(x)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from headstart import errors
from headstart.data.manifest import Task
from headstart.heads.ensemble import TIE_BREAK
from headstart.heads.ood import OodScorer
from headstart.heads.oof import STACK_FLOOR
from headstart.heads.registry import ENSEMBLE, MULTILABEL, export_head
from headstart.heads.torch_forest import Forest, as_tensor, state_array

__all__ = ["OodModule", "head_module_from_state", "head_to_torch", "ood_module", "task_module"]

#: The kNN head adds this to cosine distances before inverting them (same as ``KNNHead``).
_KNN_EPS = 1e-6
#: Floor on kNN vote shares (and composite heads' probabilities) before the log, so a class
#: without votes gets a finite logit.
_KNN_FLOOR = 1e-30
#: Head kinds with a torch module.
_KINDS = ("bagging", "ensemble", "hgb", "knn", "lightgbm", "logistic", "mlp")


class _Standardised(nn.Module):
    """``(x - mean) / scale`` followed by dense layers (the logistic and MLP heads)."""

    mean: Tensor
    scale: Tensor

    def __init__(
        self,
        mean: NDArray[Any],
        scale: NDArray[Any],
        layers: Sequence[tuple[NDArray[Any], NDArray[Any]]],
        activation: str,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", as_tensor(mean))
        self.register_buffer("scale", as_tensor(scale))
        self.linears = nn.ModuleList()
        for coef, bias in layers:  # coef is (in, out), as the heads multiply x @ coef
            linear = nn.Linear(coef.shape[0], coef.shape[1])
            with torch.no_grad():
                linear.weight.copy_(as_tensor(coef).T)
                linear.bias.copy_(as_tensor(bias).reshape(-1))
            self.linears.append(linear)
        self.activation = activation
        # A binary head has one logistic score s; logits [0, s] have softmax [1 - sig(s), sig(s)].
        self.binary = int(layers[-1][0].shape[1]) == 1

    def _activate(self, x: Tensor) -> Tensor:
        if self.activation == "relu":
            return torch.relu(x)
        if self.activation == "tanh":
            return torch.tanh(x)
        if self.activation == "logistic":
            return torch.sigmoid(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        """Class logits (N, C)."""
        x = (x - self.mean) / self.scale
        for linear in self.linears[:-1]:
            x = self._activate(linear(x))
        scores: Tensor = self.linears[-1](x)
        if self.binary:
            return torch.cat([torch.zeros_like(scores), scores], dim=1)
        return scores


class _KNN(nn.Module):
    """Cosine top-k vote returned as log-probabilities (exact forward; gradients flow through
    the neighbours' distance weights only)."""

    embeddings_t: Tensor
    onehot: Tensor

    def __init__(
        self, embeddings: NDArray[Any], labels: NDArray[Any], n_classes: int, k: int, distance: bool
    ) -> None:
        super().__init__()
        self.register_buffer("embeddings_t", as_tensor(embeddings).T.contiguous())
        onehot = np.eye(n_classes, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]
        self.register_buffer("onehot", torch.from_numpy(onehot))
        self.k = min(k, embeddings.shape[0])
        self.distance = distance

    def forward(self, x: Tensor) -> Tensor:
        """Log vote shares (N, C)."""
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        x = x / torch.where(norm > 0, norm, torch.ones_like(norm))
        similarity, nearest = torch.topk(x @ self.embeddings_t, self.k, dim=1)
        if self.distance:
            weight = 1.0 / (torch.clamp(1.0 - similarity, 0.0, 2.0) + _KNN_EPS)
        else:
            weight = torch.ones_like(similarity)
        votes = (weight.unsqueeze(-1) * self.onehot[nearest]).sum(dim=1)
        share = votes / votes.sum(dim=1, keepdim=True)
        return torch.log(torch.clamp(share, min=_KNN_FLOOR))


class _MultiLabel(nn.Module):
    """Per-label logits (N, L): each label's binary head gives (negative, positive) logits and
    ``positive - negative`` is the logit whose sigmoid is the label's probability."""

    def __init__(self, labels: Sequence[nn.Module]) -> None:
        super().__init__()
        self.labels = nn.ModuleList(labels)

    def forward(self, x: Tensor) -> Tensor:
        """Label logits (N, L)."""
        columns = []
        for module in self.labels:
            pair = module(x)
            columns.append(pair[:, 1:2] - pair[:, 0:1])
        return torch.cat(columns, dim=1)


def _log_floored(proba: Tensor) -> Tensor:
    return torch.log(torch.clamp(proba, min=_KNN_FLOOR))


class _MeanProba(nn.Module):
    """Bagging: the log of the members' mean softmax probabilities."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Tensor:
        """Log mean probabilities (N, C)."""
        probas = [torch.softmax(member(x), dim=1) for member in self.members]
        return _log_floored(torch.stack(probas).mean(dim=0))


class _Ensemble(nn.Module):
    """An ensemble head: each member reads its column slice; soft vote, hard vote (one-hot of
    each member's argmax, the soft mean as tie-break) or a stacker on clipped log-probabilities."""

    def __init__(
        self,
        members: Sequence[nn.Module],
        slices: Sequence[tuple[int, int]],
        method: str,
        weights: Sequence[float],
        meta: nn.Module | None,
    ) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.slices = [(int(a), int(b)) for a, b in slices]
        self.method = method
        self.weights = [float(w) for w in weights]
        self.meta = meta

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, C): the stacker's, else the log of the combined probabilities."""
        logits = [m(x[:, a:b]) for m, (a, b) in zip(self.members, self.slices, strict=True)]
        if self.meta is not None:
            floor = float(np.log(STACK_FLOOR))
            logs = [torch.clamp(torch.log_softmax(z, dim=1), min=floor) for z in logits]
            out: Tensor = self.meta(torch.cat(logs, dim=1))
            return out
        probas = [torch.softmax(z, dim=1) for z in logits]
        pairs = list(zip(self.weights, probas, strict=True))
        soft = torch.stack([w * p for w, p in pairs]).sum(dim=0)
        if self.method != "hard":
            return _log_floored(soft)
        index = torch.arange(soft.shape[1], device=x.device)
        votes = [w * (p.argmax(dim=1, keepdim=True) == index).to(x.dtype) for w, p in pairs]
        return _log_floored((1.0 - TIE_BREAK) * torch.stack(votes).sum(dim=0) + TIE_BREAK * soft)


class _Reordered(nn.Module):
    """Output columns permuted (the head's class order -> the caller's)."""

    order: Tensor

    def __init__(self, inner: nn.Module, order: Sequence[int]) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("order", torch.tensor(list(order), dtype=torch.int64))

    def forward(self, x: Tensor) -> Tensor:
        """Logits in the requested class order."""
        out: Tensor = self.inner(x)
        return out.index_select(1, self.order)


def _prefixed(arrays: Mapping[str, NDArray[Any]], prefix: str) -> dict[str, NDArray[Any]]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _module_for(arrays: Mapping[str, NDArray[Any]], meta: Mapping[str, Any]) -> nn.Module:
    kind = meta.get("kind")
    params = meta.get("params") or {}
    if kind == MULTILABEL:
        subs = (meta.get("state") or {}).get("label_heads") or []
        return _MultiLabel([_module_for(_prefixed(arrays, f"{j}/"), s) for j, s in enumerate(subs)])
    if kind in ("bagging", ENSEMBLE):
        return _composite_module(arrays, meta)
    n_classes = len(meta.get("classes") or [])
    if kind in ("hgb", "lightgbm"):
        return Forest(arrays, kind)
    if kind == "logistic":
        coef = state_array(arrays, "coef", kind)  # (C or 1, D)
        layers = [(coef.T, state_array(arrays, "intercept", kind))]
        return _Standardised(arrays["mean"], arrays["scale"], layers, "identity")
    if kind == "mlp":
        n_layers = int((meta.get("state") or {}).get("n_layers", 0))
        layers = [
            (state_array(arrays, f"coef_{i}", kind), state_array(arrays, f"intercept_{i}", kind))
            for i in range(n_layers)
        ]
        if not layers:
            raise errors.BundleError("mlp head meta has no layers")
        activation = str(params.get("activation", "relu"))
        return _Standardised(arrays["mean"], arrays["scale"], layers, activation)
    if kind == "knn":
        return _KNN(
            state_array(arrays, "embeddings", kind),
            state_array(arrays, "labels", kind),
            n_classes,
            int(params.get("n_neighbors", 10)),
            params.get("weights", "distance") == "distance",
        )
    raise errors.ConfigError(f"no torch version of head kind {kind!r}; known: {', '.join(_KINDS)}")


def _composite_module(arrays: Mapping[str, NDArray[Any]], meta: Mapping[str, Any]) -> nn.Module:
    state = meta.get("state") or {}
    if meta.get("kind") == "bagging":
        subs = state.get("estimators") or []
        return _MeanProba([_module_for(_prefixed(arrays, f"{i}/"), m) for i, m in enumerate(subs)])
    subs = state.get("members") or []
    members = [_module_for(_prefixed(arrays, f"{i}/"), m) for i, m in enumerate(subs)]
    stacker = state.get("meta")
    method = str((meta.get("params") or {}).get("method", "vote"))
    return _Ensemble(
        members,
        [tuple(pair) for pair in state.get("slices") or []],
        method,
        state.get("weights") or [],
        None if stacker is None else _module_for(_prefixed(arrays, "meta/"), stacker),
    )


def head_module_from_state(
    arrays: Mapping[str, NDArray[Any]],
    meta: Mapping[str, Any],
    *,
    classes: Sequence[Any] | None = None,
) -> nn.Module:
    """The torch module of a head given as :func:`~headstart.heads.export_head` output.

    ``classes``: the output column order (default: the head's own ``classes`` order).
    """
    head_classes = list(meta.get("classes") or [])
    module = _module_for(arrays, meta)
    if classes is not None and list(classes) != head_classes:
        unknown = [c for c in classes if c not in head_classes]
        if unknown or len(classes) != len(head_classes):
            raise errors.ConfigError(
                f"classes {list(classes)!r} are not a reordering of the head's {head_classes!r}"
            )
        module = _Reordered(module, [head_classes.index(c) for c in classes])
    return module.eval()


def head_to_torch(head: Any, *, classes: Sequence[Any] | None = None) -> nn.Module:
    """A fitted head as a torch module mapping features (N, D) float32 to logits (N, C).

    Softmax of the logits equals ``head.predict_proba`` (kNN: its logits are log vote shares).
    ``classes`` reorders the output columns (e.g. to :attr:`headstart.Model.classes`); by default
    they follow ``head.classes_``.  The module is in eval mode and ONNX-exportable (opset 17).
    """
    arrays, meta = export_head(head)
    return head_module_from_state(arrays, meta, classes=classes)


def task_module(task: Task, head: Any) -> nn.Module:
    """The head of ``task`` as a torch module from features to the task's logits, columns in
    ``task.classes`` order: softmax gives a multi-class task's probabilities, sigmoid a
    multi-label task's (one logit per label)."""
    if task.multi_label:
        return head_to_torch(head)
    return head_to_torch(head, classes=list(task.classes))


class OodModule(nn.Module):
    """The OOD score of :class:`~headstart.heads.ood.OodScorer` in torch: features (N, D) ->
    (N, 1) cosine distance to the k-th nearest bank row (normalise, one matmul, ``topk``), the
    same float32 arithmetic as ``OodScorer.score``."""

    bank_t: Tensor

    def __init__(self, scorer: OodScorer) -> None:
        super().__init__()
        # kept float16 (an ONNX graph stores it at the bundle's size) and widened in forward
        self.register_buffer("bank_t", torch.from_numpy(scorer.bank.T.copy()))
        self.k = scorer.k

    def forward(self, x: Tensor) -> Tensor:
        """OOD scores (N, 1), higher = more unlike the training images."""
        x = torch.nn.functional.normalize(x.float(), dim=1, eps=1e-12)
        kth = torch.topk(x @ self.bank_t.float(), self.k, dim=1).values[:, self.k - 1 :]
        return 1.0 - kth


def ood_module(scorer: OodScorer) -> nn.Module:
    """The scorer as a torch module in eval mode (ONNX-exportable, opset 17)."""
    return OodModule(scorer).eval()
