"""The export of a bundle whose backbone is static int8 (``extract.precision=int8``): the
whole-model graph with its float32 backbone replaced by the bundle's own int8 model(s).

The float32 graph is exported and checked against torch as for any bundle (that checks the
heads and the OOD scorer); then each backbone part's nodes (``/backbone/`` for a single
backbone, ``/backbone/parts.<i>/`` for a fusion) are swapped for the part's int8 graph, wired
to the same image input and feeding the same features tensor.  Torch cannot run the int8
backbone, so the result is checked against what the :class:`~headstart.model.Model` itself
computes: ONNX Runtime on the bundle's int8 file(s) followed by the bundle's numpy heads and
scorer.  The same quantized graph runs either way, so the tolerance is the usual one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headstart.bundle import BundleContents
from headstart.export.parity import ExportError, max_diff
from headstart.features.extract import int8_bytes
from headstart.features.onnx_engine import OnnxFeatures
from headstart.heads import task_proba

__all__ = [
    "Int8BackboneParity",
    "check_int8_parity",
    "graft_int8_backbone",
    "int8_reference",
]

_BATCH = 32


@dataclass(frozen=True)
class Int8BackboneParity:
    """The exported int8 graph against the bundle's own int8 predictions (same images):
    the largest probability difference over every task, and the OOD score's (None without
    a scorer)."""

    max_abs_diff: float
    ood_max_abs_diff: float | None


def _scopes(contents: BundleContents) -> list[str]:
    ref = contents.backbone
    if not ref.is_fused:
        return ["/backbone/"]
    return [f"/backbone/parts.{i}/" for i in range(len(ref.parts))]


def graft_int8_backbone(whole: Path, contents: BundleContents, dest: Path) -> None:
    """Write ``whole`` (the bundle's float32 whole-model export) to ``dest`` with each
    backbone part replaced by the bundle's int8 model of it (checked by its sha256)."""
    # lazy: onnx takes a second to import; only this path needs it
    import onnx

    proto = onnx.load(str(whole))
    for i, (scope, part) in enumerate(
        zip(_scopes(contents), contents.backbone.members, strict=True)
    ):
        int8 = onnx.load_from_string(int8_bytes(part))
        _replace_scope(proto, scope, int8, f"int8_{i}/")
    _drop_dead_nodes(proto.graph)
    used = {name for node in proto.graph.node for name in node.input}
    kept = [init for init in proto.graph.initializer if init.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(dest))


def _drop_dead_nodes(graph: Any) -> None:
    """Remove nodes whose outputs nothing reads: the exporter names some of a backbone's
    constants outside its scope (``Constant_622``), and once their readers are swapped out
    ONNX Runtime would warn about each at every session start."""
    while True:
        needed = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if not any(out in needed for out in n.output)]
        if not dead:
            return
        for node in dead:
            graph.node.remove(node)


def _replace_scope(proto: Any, scope: str, int8: Any, prefix: str) -> None:
    """Swap the nodes named under ``scope`` for ``int8``'s graph (one input, one output)."""
    # lazy: onnx takes a second to import; only this path needs it
    from onnx import compose

    graph = proto.graph
    nodes = list(graph.node)
    inside = [n for n in nodes if n.name.startswith(scope)]
    outside = [n for n in nodes if not n.name.startswith(scope)]
    produced = {name for n in inside for name in n.output}
    consumed = {name for n in outside for name in n.input} | {o.name for o in graph.output}
    boundary = sorted(produced & consumed)
    inputs = {i.name for i in graph.input}
    feeds = sorted({name for n in inside for name in n.input if name in inputs})
    if not inside or len(boundary) != 1 or len(feeds) != 1:
        raise ExportError(
            f"cannot find the backbone '{scope}' in the exported graph "
            f"({len(inside)} nodes, outputs {boundary}, inputs {feeds}); the file was not written"
        )
    renamed = compose.add_prefix(int8, prefix)
    sub = renamed.graph
    rename = {sub.input[0].name: feeds[0], sub.output[0].name: boundary[0]}
    for node in sub.node:
        node.input[:] = [rename.get(name, name) for name in node.input]
        node.output[:] = [rename.get(name, name) for name in node.output]
    at = nodes.index(inside[0])
    del graph.node[:]
    graph.node.extend([*nodes[:at], *sub.node, *(n for n in nodes[at:] if n in outside)])
    graph.initializer.extend(sub.initializer)
    have = {(o.domain, o.version) for o in proto.opset_import}
    domains = {o.domain for o in proto.opset_import}
    for opset in int8.opset_import:
        if opset.domain not in domains and (opset.domain, opset.version) not in have:
            proto.opset_import.append(opset)


def int8_reference(
    contents: BundleContents, batches: Sequence[np.ndarray]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """What the bundle itself predicts with its int8 backbone: ONNX Runtime on each part's
    int8 model (``batches``: one preprocessed batch per part), features side by side, then
    each task's numpy head (and the OOD scorer's scores, None without one)."""
    columns = []
    for part, batch in zip(contents.backbone.members, batches, strict=True):
        run = OnnxFeatures(int8_bytes(part))
        columns.append(
            np.concatenate([run(batch[i : i + _BATCH]) for i in range(0, len(batch), _BATCH)])
        )
    features = np.concatenate(columns, axis=1)
    probas = {t.name: task_proba(t, contents.heads[t.name], features) for t in contents.tasks}
    ood = None if contents.ood is None else contents.ood.score(features)
    return probas, ood


def check_int8_parity(
    probas: dict[str, np.ndarray],
    ood: np.ndarray | None,
    reference: tuple[dict[str, np.ndarray], np.ndarray | None],
    tolerance: float,
    n: int,
) -> Int8BackboneParity:
    """The int8 graph's outputs against :func:`int8_reference`; ``ExportError`` beyond
    ``tolerance``."""
    expected, expected_ood = reference
    diff = max(max_diff(probas[name], expected[name]) for name in expected)
    ood_diff = None if ood is None or expected_ood is None else max_diff(ood, expected_ood)
    worst = max(diff, ood_diff or 0.0)
    if worst > tolerance:
        raise ExportError(
            f"the int8 ONNX export does not match the bundle's int8 predictions: max abs "
            f"difference {worst:.3g} on {n} images exceeds the tolerance {tolerance:g}; the "
            "file was not written"
        )
    return Int8BackboneParity(diff, ood_diff)
