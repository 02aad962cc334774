"""A text model as one ONNX graph: token ids and attention mask -> encoder -> pooling (and L2
normalisation) -> every task's head (and the OOD score), with its tokenizer written beside it.

Checked three ways on a few texts (a long one among them, so truncation is exercised):
onnxruntime against torch eager on the same tokens, torch's heads against the bundle's numpy
heads on torch's features, and onnxruntime against the bundle's own predictions (its text engine
and heads: what ``headstart predict`` answers).  Any difference above the tolerance is an
:class:`~headstart.export.parity.ExportError` and nothing is written.  ``quantize="int8"``
writes a copy with dynamic int8 MatMul/Gemm weights, per channel (the transformer's matmuls; the
OOD scorer's stay float32; see :mod:`headstart.export.quantize` for what it costs) and reports
its change on the same texts.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from headstart.bundle import BundleContents
from headstart.cache import CacheRoot
from headstart.data.manifest import Task
from headstart.data.texts import text_problem
from headstart.errors import ConfigError
from headstart.export.document import OOD_OUTPUT, OPSET, describe_text, metadata_props
from headstart.export.graph import (
    JOINED,
    json_text,
    onnx_probabilities,
    ood_column,
    publish,
    split_outputs,
    temp_beside,
)
from headstart.export.onnx_model import ExportResult, Int8Report, TaskInt8
from headstart.export.parity import (
    ExportError,
    OodParity,
    TaskParity,
    check_ood_parity,
    check_parity,
    max_diff,
    torch_reference,
)
from headstart.export.quantize import quantize_int8
from headstart.export.tokens import (
    INPUT_NAMES,
    configured_tokenizer,
    encode,
    require_encoder,
    tokenizer_file_for,
    write_tokenizer,
)
from headstart.fsutil import atomic_write_text
from headstart.inputs import expand_texts
from headstart.model import Model, split_columns

if TYPE_CHECKING:
    from torch import nn

__all__ = ["DEFAULT_CHECK_TEXTS", "check_texts_for", "export_text_model"]

#: Parity texts when none are given: short and long, questions and statements, and one longer
#: than any encoder's token limit (its end is truncated the same way everywhere).
DEFAULT_CHECK_TEXTS: tuple[str, ...] = (
    "How do I reset my password?",
    "The delivery arrived two days late and the box was damaged.",
    "I love this!",
    "Can you tell me why my card payment was declined at the shop yesterday?",
    "ok",
    "Quarterly revenue rose 12% on strong demand for cloud services.",
    "The referee sent off two players in the second half.",
    "Ich möchte mein Konto schließen, bitte.",
    " ".join(["This sentence repeats to make a text longer than the token limit."] * 60),
)
#: At most this many check texts are used (evenly spread over those given).
_LIMIT = 200


def check_texts_for(contents: BundleContents, items: Sequence[str | Path] | None) -> list[str]:
    """The texts for the parity check: ``items`` as ``headstart predict`` reads them (texts,
    ``.txt`` files, folders, CSV files of the model's text column; unusable ones left out), at
    most 200 spread evenly; :data:`DEFAULT_CHECK_TEXTS` when ``items`` is None."""
    if items is None:
        return list(DEFAULT_CHECK_TEXTS)
    column = contents.info.get("config", {}).get("data", {}).get("text_column") or "text"
    texts = [text for _, text, problem in expand_texts(items, str(column)) if problem is None]
    if not texts:
        raise ConfigError("no usable text to check the export with (all empty or unreadable)")
    if len(texts) > _LIMIT:
        texts = [texts[int(i)] for i in np.linspace(0, len(texts) - 1, _LIMIT)]
    return texts


def _export_graph(module: nn.Module, path: Path, output: str, metadata: dict[str, str]) -> None:
    """``module`` (ids, mask -> outputs) to ONNX with dynamic batch and sequence axes."""
    # lazy: torch takes seconds to import; only this path needs it
    import torch

    example = (torch.zeros(2, 8, dtype=torch.int64), torch.ones(2, 8, dtype=torch.int64))
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # exporter deprecation chatter is not the user's
        torch.onnx.export(
            module.eval(),
            example,
            str(path),
            input_names=list(INPUT_NAMES),
            output_names=[output],
            dynamic_axes={**axes, output: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    _set_metadata(path, metadata)


def _set_metadata(path: Path, metadata: Mapping[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))


def _bundle_outputs(
    contents: BundleContents, texts: Sequence[str]
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The bundle's own uncalibrated probabilities and OOD scores for ``texts``: its text
    engine's embeddings, its numpy heads and scorer (what the graph must reproduce)."""
    model = Model(contents, None, CacheRoot.of())
    features, failures = model.embed(texts)
    if failures:
        first = next(iter(failures.items()))
        raise ConfigError(f"check text {first[0] + 1} cannot be embedded: {first[1]}")
    ood = None if contents.ood is None else contents.ood.score(features)
    return model.uncalibrated_proba(features), ood


def _text_int8(
    path: Path, fp32: Mapping[str, np.ndarray], feeds: Sequence[np.ndarray], tasks: list[Task],
    fp32_ood: np.ndarray | None,
) -> Int8Report:  # fmt: skip
    dest = path.with_name(f"{path.name.removesuffix('.onnx')}.int8.onnx")
    tmp = temp_beside(dest)
    try:
        quantize_int8(path, tmp, per_channel=True)
        outputs = onnx_probabilities(tmp, feeds)
        publish(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    int8, int8_ood = split_columns(tasks, outputs), ood_column(outputs, tasks)
    per_task = {}
    for t in tasks:
        agree = float(np.mean(np.argmax(int8[t.name], 1) == np.argmax(fp32[t.name], 1)))
        per_task[t.name] = TaskInt8(
            max_abs_diff=max_diff(int8[t.name], fp32[t.name]),
            top1_agreement=None if t.multi_label else agree,
            accuracy_fp32=None,
            accuracy_int8=None,
            n_labelled=0,
        )
    agreements = [r.top1_agreement for r in per_task.values() if r.top1_agreement is not None]
    return Int8Report(
        path=dest,
        max_abs_diff=max(r.max_abs_diff for r in per_task.values()),
        top1_agreement=min(agreements) if agreements else None,
        accuracy_fp32=math.nan,
        accuracy_int8=math.nan,
        n_labelled=0,
        tasks=per_task,
        ood_max_abs_diff=None
        if fp32_ood is None or int8_ood is None
        else max_diff(int8_ood, fp32_ood),
    )


def export_text_model(
    contents: BundleContents,
    path: Path,
    *,
    quantize: str | None,
    check_texts: Sequence[str | Path] | None,
    tolerance: float,
) -> ExportResult:
    """Export a text model's bundle (see the module doc) to ``path`` with its tokenizer beside
    it (:func:`~headstart.export.tokens.tokenizer_file_for`) and ``<path>.json``; called by
    :func:`headstart.export.export_model`, which validated the arguments."""
    start = time.perf_counter()
    require_encoder(contents.backbone)
    spec = contents.backbone.text
    assert spec is not None  # require_encoder checked it
    tasks = contents.tasks
    texts = [t.strip() for t in check_texts_for(contents, check_texts)]
    bad = next(((i, why) for i, t in enumerate(texts) if (why := text_problem(t))), None)
    if bad is not None:
        raise ConfigError(f"check text {bad[0] + 1} cannot be used: {bad[1]}")
    tokenizer = configured_tokenizer(spec.folder, spec.max_length)
    feeds = encode(tokenizer, texts)
    # lazy: torch and transformers take seconds to import; only this path needs them
    from headstart.export.torch_model import build_torch_model

    module = build_torch_model(contents)
    ref_out = torch_reference(module, contents, feeds)
    bundle, bundle_ood = _bundle_outputs(contents, texts)
    tok_path = tokenizer_file_for(path)
    doc = describe_text(contents, OPSET, tok_path.name)
    names = [o["name"] for o in doc["outputs"] if o["name"] != OOD_OUTPUT]
    tmp = temp_beside(path)
    try:
        joined = names[0] if len(tasks) == 1 and contents.ood is None else JOINED
        _export_graph(module, tmp, joined, metadata_props(doc))
        if joined == JOINED:
            split_outputs(tmp, tasks, ood=contents.ood is not None)
        outputs = onnx_probabilities(tmp, feeds)
        fp32, fp32_ood = split_columns(tasks, outputs), ood_column(outputs, tasks)
        parity = {
            t.name: TaskParity(
                output=name,
                max_abs_diff=max_diff(fp32[t.name], ref_out.eager[t.name]),
                head_max_abs_diff=max_diff(ref_out.eager[t.name], ref_out.reference[t.name]),
                bundle_max_abs_diff=max_diff(fp32[t.name], bundle[t.name]),
            )
            for t, name in zip(tasks, names, strict=True)
        }
        ood = None
        if fp32_ood is not None and ref_out.eager_ood is not None:
            assert ref_out.reference_ood is not None and bundle_ood is not None  # with a scorer
            ood = OodParity(
                max_diff(fp32_ood, ref_out.eager_ood),
                max_diff(ref_out.eager_ood, ref_out.reference_ood),
                max_diff(fp32_ood, bundle_ood),
            )
        check_parity(parity, tolerance, len(texts), "texts")
        check_ood_parity(ood, tolerance, len(texts), "texts")
        sha = write_tokenizer(tokenizer, tok_path)
        if sha != doc["tokenizer"]["sha256"]:  # the document names the file by its digest
            raise ExportError(f"{tok_path} was not written as described; export again")
        publish(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    diff = max(p.max_abs_diff for p in parity.values())
    head_diff = max(p.head_max_abs_diff for p in parity.values())
    doc["parity"] = {
        "texts": len(texts),
        "max_abs_diff": diff,
        "head_max_abs_diff": head_diff,
        "bundle_max_abs_diff": max(p.bundle_max_abs_diff or 0.0 for p in parity.values()),
        "tolerance": tolerance,
        "tasks": {name: asdict(p) for name, p in parity.items()},
        "ood": None if ood is None else asdict(ood),
    }
    doc["backbone_precision"] = "fp32"
    report = None
    if quantize == "int8":
        report = _text_int8(path, fp32, feeds, tasks, fp32_ood)
        doc["int8"] = {k: v for k, v in asdict(report).items() if k != "path"}
        doc["int8"]["file"] = report.path.name
    meta_path = path.with_name(path.name + ".json")
    atomic_write_text(meta_path, json_text(doc))
    return ExportResult(
        path, meta_path, len(texts), diff, head_diff, tolerance,
        time.perf_counter() - start, report, parity, ood, None, "texts",
    )  # fmt: skip
