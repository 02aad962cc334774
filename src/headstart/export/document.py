"""What an exported model says about itself: inputs, one output per task, the OOD score,
preprocessing, thresholds and calibration (``model.onnx.json`` and the file's own
``metadata_props``).

Output naming rule: a one-task model has the single output ``probabilities`` (as every export
before tasks had); a model of several tasks has one output per task, in task order, named
``probabilities:<task name>``.  Each output's columns follow its task's classes.  A multi-class
output holds softmax probabilities (rows sum to 1); a multi-label output holds each label's own
sigmoid probability.  The graph gives *uncalibrated* probabilities: a bundle's calibration
temperatures are recorded here and applied by the runtime (:class:`~headstart.export.runtime.
OnnxClassifier`), exactly as :meth:`headstart.Model.proba_from_features` applies them.  The
preprocessing block's ``steps`` say how an image file becomes the graph's input, every parameter
included (:mod:`headstart.export.recipe`).

Inputs: a single backbone's graph has one input, ``images`` (``input`` and ``preprocessing``
describe it).  A fused backbone's graph (``-b a+b``: the parts' features side by side, then the
heads) has one input per part, in order, named ``images_0``, ``images_1``, ...; the document
(format 4) lists them in ``inputs``, each with its backbone, shape and its own ``preprocessing``
(``steps`` included): every image goes through each input's steps, and the batches are passed
together.

A bundle with an out-of-distribution scorer (:mod:`headstart.heads.ood`) adds the output
``ood_score`` (N,) after the task outputs, computed in the graph from the same pooled features
(normalise, one matmul with the stored bank, top-k): higher = more unlike the training images.
The ``ood`` block records the method, ``k`` and the ``threshold`` above which an image is
flagged (the runtime compares; the graph gives the score).

A text model's graph (document format 5, ``"modality": "text"``) takes ``input_ids`` and
``attention_mask`` (int64, batch x sequence, both axes dynamic; listed in ``inputs``) and holds
the encoder, its pooling and normalisation, and the heads.  Its ``tokenizer`` block names the
tokenizer file written beside the model (with its sha256) and every step from a text to those
inputs (:mod:`headstart.export.tokens`); ``text_column`` is the CSV column texts are read from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from headstart.backbones import BackboneRef
from headstart.bundle import BundleContents
from headstart.data.manifest import DEFAULT_TASK, Task
from headstart.errors import BundleError
from headstart.export.recipe import preprocessing_steps
from headstart.export.tokens import (
    INPUT_NAMES,
    TOKENIZER_FILE,
    configured_tokenizer,
    require_encoder,
    tokenizer_steps,
    tokenizer_text,
)
from headstart.features.onnx_engine import INPUT_NAME
from headstart.heads import thresholds_of
from headstart.model import Model
from headstart.stats.temperature import Temperature, read_temperatures, temperature_entry

__all__ = [
    "DOC_FORMAT",
    "DOC_VERSION",
    "METADATA_KEY",
    "OOD_OUTPUT",
    "OPSET",
    "OUTPUT_NAME",
    "TEXT_DOC_VERSION",
    "ExportedTask",
    "calibration_block",
    "describe",
    "describe_text",
    "exported_tasks",
    "input_names",
    "metadata_props",
    "ood_block",
    "output_names",
    "temperatures_of",
]

OUTPUT_NAME = "probabilities"
#: The graph output holding each image's OOD score (bundles with a scorer).
OOD_OUTPUT = "ood_score"
METADATA_KEY = "headstart"
DOC_FORMAT = "headstart-onnx"
#: 1: one task (``classes``, output ``probabilities``); 2: ``tasks``, ``outputs``, calibration;
#: 3: ``preprocessing.steps`` are objects with every parameter (see :mod:`.recipe`); 4: a fused
#: backbone's ``inputs``, one per part; 5: a text model (see :func:`describe_text`).  The newest
#: an image model's document has.
DOC_VERSION = 4
#: The version of a single backbone's document (unchanged by format 4: older readers read it).
SINGLE_DOC_VERSION = 3
#: A text model's document: ``modality`` "text", token ``inputs`` and a ``tokenizer`` block.
TEXT_DOC_VERSION = 5
OPSET = 17

ExportedTask = tuple[Task, str, list[float] | None]
"""A task of an exported model: the task, its output's name, its thresholds (multi-label)."""


def output_names(tasks: Sequence[Task]) -> list[str]:
    """The graph's output names, one per task in order (see the module's naming rule)."""
    if len(tasks) == 1:
        return [OUTPUT_NAME]
    return [f"{OUTPUT_NAME}:{task.name}" for task in tasks]


def input_names(backbone: BackboneRef) -> list[str]:
    """The graph's input names, one per backbone part in order (see the module's rule)."""
    if not backbone.is_fused:
        return [INPUT_NAME]
    return [f"{INPUT_NAME}_{i}" for i in range(len(backbone.parts))]


def _inputs(backbone: BackboneRef) -> list[dict[str, Any]]:
    """Each input of a fused backbone's graph: its part, shape and own preprocessing."""
    return [
        {
            "name": name,
            "backbone": part.name,
            "dtype": "float32",
            "shape": ["batch", 3, part.preprocessing.crop, part.preprocessing.crop],
            "layout": "NCHW, RGB channels",
            "preprocessing": {
                **part.preprocessing.to_dict(),
                "steps": preprocessing_steps(part.preprocessing, name),
            },
        }
        for name, part in zip(input_names(backbone), backbone.parts, strict=True)
    ]


def _meaning(task: Task) -> str:
    if task.multi_label:
        return (
            f"'{task.name}' label probabilities (one sigmoid per label, independent), columns "
            "in the order of the task's classes; a label is chosen at or above its threshold"
        )
    return f"'{task.name}' class probabilities (softmax), columns in the order of its classes"


def _temperatures(contents: BundleContents) -> dict[str, Temperature]:
    return Model(contents).temperatures


def calibration_block(contents: BundleContents) -> dict[str, Any] | None:
    """The bundle's calibration as the export records it (None when not calibrated)."""
    temperatures = _temperatures(contents)
    if not temperatures:
        return None
    tasks: dict[str, Any] = {}
    for name, t in temperatures.items():
        tasks[name] = temperature_entry(t)
    return {
        "method": "temperature",
        "in_graph": False,
        "tasks": tasks,
        "apply": "not in the graph: the runtime applies them to the outputs, multi-class "
        "softmax(log(p) / T), multi-label per label sigmoid(logit(p) / T)",
    }


def ood_block(contents: BundleContents) -> dict[str, Any] | None:
    """The bundle's OOD scorer as the export records it (None when it has none)."""
    if contents.ood is None:
        return None
    return {**contents.ood.meta(), "output": OOD_OUTPUT, "in_graph": True}


def _outputs(contents: BundleContents) -> list[dict[str, Any]]:
    """The graph's outputs: one per task, in order, then ``ood_score`` with a scorer."""
    what = "text" if contents.backbone.modality == "text" else "image"
    outputs = [
        {
            "name": name,
            "task": task.name,
            "dtype": "float32",
            "shape": ["batch", len(task.classes)],
            "meaning": _meaning(task),
        }
        for task, name in zip(contents.tasks, output_names(contents.tasks), strict=True)
    ]
    if contents.ood is not None:
        outputs.append(
            {
                "name": OOD_OUTPUT,
                "dtype": "float32",
                "shape": ["batch"],
                "meaning": f"how unlike the training {what}s each {what} is (distance of its "
                "L2-normalised embedding to the k-th nearest training embedding); above "
                "ood.threshold it is flagged",
            }
        )
    return outputs


def _task_docs(contents: BundleContents) -> list[dict[str, Any]]:
    docs = []
    for task, name in zip(contents.tasks, output_names(contents.tasks), strict=True):
        entry: dict[str, Any] = {**task.to_dict(), "output": name}
        thresholds = thresholds_of(task, contents.heads[task.name])
        if thresholds is not None:
            entry["thresholds"] = [float(t) for t in thresholds]
        docs.append(entry)
    return docs


def describe(contents: BundleContents, opset: int = OPSET) -> dict[str, Any]:
    """The document that says how to call the exported model (its input, or a fused
    backbone's inputs, one output per task, preprocessing, classes, thresholds, calibration);
    a text model's: its token inputs and tokenizer (:func:`describe_text`)."""
    if contents.backbone.modality == "text":
        return describe_text(contents, opset)
    prep = contents.backbone.preprocessing
    tasks = contents.tasks
    outputs = _outputs(contents)
    backbone = contents.backbone
    doc: dict[str, Any] = {"format": DOC_FORMAT}
    if backbone.is_fused:
        doc |= {"format_version": DOC_VERSION, "inputs": _inputs(backbone)}
    else:
        doc |= {
            "format_version": SINGLE_DOC_VERSION,
            "input": {
                "name": INPUT_NAME,
                "dtype": "float32",
                "shape": ["batch", 3, prep.crop, prep.crop],
                "layout": "NCHW, RGB channels",
            },
        }
    if len(tasks) == 1:  # the one task output, as every export before tasks had
        doc["output"] = {k: v for k, v in outputs[0].items() if k != "task"}
    doc |= {
        "outputs": outputs,
        "classes": list(tasks[0].classes),
        "tasks": _task_docs(contents),
        "calibration": calibration_block(contents),
        "ood": ood_block(contents),
    }
    if not backbone.is_fused:
        doc["preprocessing"] = {**prep.to_dict(), "steps": preprocessing_steps(prep)}
    doc |= {
        "opset": opset,
        "backbone": _backbone_block(backbone),
        "head": {"kind": contents.info.get("head", {}).get("kind")},
        "bundle": {"head_sha256": contents.info.get("files", {}).get("head.safetensors")},
        "usage": _usage(backbone),
    }
    return doc


def describe_text(
    contents: BundleContents, opset: int = OPSET, tokenizer_file: str = TOKENIZER_FILE
) -> dict[str, Any]:
    """A text model's document (format 5): the inputs ``input_ids`` and ``attention_mask``,
    the tokenizer written beside the model (``tokenizer_file``, its sha256 and every step from
    a text to the inputs), one output per task, classes, thresholds, calibration, OOD."""
    require_encoder(contents.backbone)
    spec = contents.backbone.text
    assert spec is not None  # require_encoder checked it
    tokenizer = configured_tokenizer(spec.folder, spec.max_length)
    tasks = contents.tasks
    inputs = [
        {"name": name, "dtype": "int64", "shape": ["batch", "sequence"], "meaning": meaning}
        for name, meaning in zip(
            INPUT_NAMES, ("token ids", "1 for a real token, 0 for padding"), strict=True
        )
    ]
    column = contents.info.get("config", {}).get("data", {}).get("text_column")
    return {
        "format": DOC_FORMAT,
        "format_version": TEXT_DOC_VERSION,
        "modality": "text",
        "inputs": inputs,
        "outputs": _outputs(contents),
        "classes": list(tasks[0].classes),
        "tasks": _task_docs(contents),
        "calibration": calibration_block(contents),
        "ood": ood_block(contents),
        "tokenizer": {
            "file": tokenizer_file,
            "sha256": hashlib.sha256(tokenizer_text(tokenizer).encode("utf-8")).hexdigest(),
            "max_length": spec.max_length,
            "steps": tokenizer_steps(tokenizer, tokenizer_file),
        },
        "text_column": str(column) if column else "text",
        "opset": opset,
        "backbone": {
            **_backbone_block(contents.backbone),
            "text": {
                "tokenizer_sha256": spec.tokenizer_sha256,
                "max_length": spec.max_length,
                "pooling": spec.pooling,
                "normalize": spec.normalize,
            },
        },
        "head": {"kind": contents.info.get("head", {}).get("kind")},
        "bundle": {"head_sha256": contents.info.get("files", {}).get("head.safetensors")},
        "usage": [
            "headstart predict MODEL_DIR 'some text' texts.csv --runtime onnx",
            f"python: tokenizer = tokenizers.Tokenizer.from_file('{tokenizer_file}'); "
            "enc = tokenizer.encode_batch([t.strip() for t in texts]); "
            "outputs = session.run(None, {'input_ids': ids, 'attention_mask': mask})  "
            "# ids, mask: int64 arrays of each enc's .ids and .attention_mask; one array "
            "per task, in order",
        ],
    }


def _backbone_block(backbone: BackboneRef) -> dict[str, Any]:
    block: dict[str, Any] = {"name": backbone.name, "sha256": backbone.weights_sha256}
    if backbone.is_fused:
        block["parts"] = [
            {"name": part.name, "sha256": part.weights_sha256, "input": name}
            for part, name in zip(backbone.parts, input_names(backbone), strict=True)
        ]
    return block


def _usage(backbone: BackboneRef) -> list[str]:
    if not backbone.is_fused:
        return [
            "headstart predict MODEL_DIR IMAGES --runtime onnx",
            "python: session = onnxruntime.InferenceSession('model.onnx'); "
            "outputs = session.run(None, {'images': batch})  # one array per task, in order",
            "batch: each image file through preprocessing.steps, in order (every parameter is "
            "in the step; its text says the same in words)",
        ]
    feed = ", ".join(f"'{name}': batch_{i}" for i, name in enumerate(input_names(backbone)))
    return [
        "headstart predict MODEL_DIR IMAGES --runtime onnx",
        "python: session = onnxruntime.InferenceSession('model.onnx'); "
        f"outputs = session.run(None, {{{feed}}})  # one array per task, in order",
        "batch_i: each image file through inputs[i].preprocessing.steps, in order (every "
        "parameter is in the step; its text says the same in words); every input gets the "
        "same images in the same order",
    ]


def metadata_props(doc: Mapping[str, Any]) -> dict[str, str]:
    """The ``metadata_props`` stored inside the .onnx file (the whole document, plus the
    first task's classes, the tasks and the preprocessing -- a fused backbone's inputs -- on
    their own keys)."""
    key = "inputs" if "inputs" in doc else "preprocessing"
    return {
        METADATA_KEY: json.dumps(doc, sort_keys=True),
        "classes": json.dumps(doc["classes"]),
        "tasks": json.dumps(doc["tasks"], sort_keys=True),
        key: json.dumps(doc[key], sort_keys=True),
    }


def exported_tasks(doc: Mapping[str, Any]) -> list[ExportedTask]:
    """The tasks an exported model answers, with each output's name and thresholds; a
    document of format 1 (one multi-class task, output ``probabilities``) reads as one task."""
    try:
        if "tasks" not in doc:
            classes = tuple(str(c) for c in doc["classes"])
            return [(Task(DEFAULT_TASK, classes), OUTPUT_NAME, None)]
        out: list[ExportedTask] = []
        for entry in doc["tasks"]:
            task = Task.from_dict(entry)
            thresholds = entry.get("thresholds")
            if task.multi_label and (thresholds is None or len(thresholds) != len(task.classes)):
                raise BundleError(f"task '{task.name}' has no thresholds for its labels")
            cut = [float(t) for t in thresholds] if thresholds is not None else None
            out.append((task, str(entry["output"]), cut))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"bad headstart metadata ({type(exc).__name__}: {exc})") from None
    if not out:
        raise BundleError("bad headstart metadata: no task")
    return out


def temperatures_of(doc: Mapping[str, Any]) -> dict[str, Temperature]:
    """The calibration temperatures a document records (empty when none)."""
    block = doc.get("calibration")
    if not isinstance(block, dict):
        return {}
    try:
        return read_temperatures(block.get("tasks") or {})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BundleError(f"bad calibration in headstart metadata ({exc})") from None
