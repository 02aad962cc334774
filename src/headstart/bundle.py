"""The model bundle: one folder that holds everything needed to predict, and nothing pickled.

Layout (format version 3; 4 for a fused backbone)::

    model/
      model.json             tasks (each task's name, classes, multi-label flag and head meta),
                             backbone (name, weights sha256, preprocessing), metrics, resolved
                             config, library versions, data hash, file digests
      head.safetensors       every task's learned arrays, keyed ``<task index>/<array>``
      backbone.safetensors   the backbone's weights (optional: without it the registry's weights
                             are used, and must have the recorded sha256)
      ood.safetensors        the out-of-distribution scorer's bank of training embeddings
                             (optional; its settings and threshold are ``"ood"`` in model.json,
                             see :mod:`headstart.heads.ood`); bundles without it have no OOD score

An int8 backbone (``extract.precision=int8``, :func:`headstart.features.int8.quantize_ref`)
adds its static int8 ONNX model as ``backbone.int8.onnx`` (a fused one: ``backbone-<i>.int8.onnx``
per part), its sha256 in the backbone record's ``int8_sha256`` and in ``files``, verified on
reading.  The format number does not change: the float32 weights stay in the bundle, and an older
reader, which ignores the file, runs the float32 backbone the int8 model was quantized from.

A fused backbone (several backbones whose features are concatenated, ``-b a+b``) is written as
format 4, the first that can hold one: model.json's backbone record lists its ``parts`` (each a
record like a single backbone's, in column order) and the weights are ``backbone-0.safetensors``,
``backbone-1.safetensors``, ... (one per part, each optional as above).  A single backbone's
bundle is still written as format 3, unchanged, so older readers keep reading it.

A text encoder (``backbone.text`` in model.json: tokenizer digest, max length, pooling) is
written as format 5: its weights, ``tokenizer.json`` and ``config.json`` sit in ``encoder/`` (a
Hugging Face folder, ``encoder/model.safetensors`` in place of ``backbone.safetensors``), each
recorded in ``files`` and verified on reading.  A fusion of text encoders (a stack of text
probes) gives each part such a folder, ``encoder-0/``, ``encoder-1/``, ...

Every model is written the same way, whatever its tasks: a plain classifier is one multi-class
task.  Readers also load the older layouts: format 1 (one head, ``classes``; the committed test
fixture) and format 2 (multi-label heads recorded as ``label_heads`` + ``thresholds``).

A bundle is written to a temporary folder beside its destination and renamed into place, so a
crash never leaves a half-written bundle, and an existing bundle is only replaced by a complete one.
Readers accept every format version up to their own and refuse newer ones with a clear message.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file

from headstart.backbones import BackboneRef, Preprocessing, fuse, resolve_backbone
from headstart.backbones.spec import TextSpec
from headstart.data.manifest import DEFAULT_TASK, Task
from headstart.errors import BundleError, HeadstartError, PathNotFoundError
from headstart.features.int8 import float_ref
from headstart.fsutil import FILE_MODE, FOLDER_MODE, entry_digest, file_digest
from headstart.heads import MultiLabelHead, OodScorer, export_head, import_head
from headstart.heads.tfidf import WORDS, is_words, words_ref

__all__ = [
    "BACKBONE_FILE",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "INT8_SUFFIX",
    "OOD_FILE",
    "SINGLE_FORMAT_VERSION",
    "BundleContents",
    "int8_files",
    "library_versions",
    "read_bundle",
    "weights_files",
    "write_bundle",
]

FORMAT_NAME = "headstart-bundle"
#: The newest format this headstart reads and writes (4: fused backbones, 5: text encoders;
#: see the module doc).
FORMAT_VERSION = 5
#: The format of a bundle with a fused image backbone.
FUSED_FORMAT_VERSION = 4
#: The format of a bundle with a single backbone (its layout did not change in format 4).
SINGLE_FORMAT_VERSION = 3
MODEL_JSON = "model.json"
HEAD_FILE = "head.safetensors"
BACKBONE_FILE = "backbone.safetensors"
INT8_SUFFIX = ".int8.onnx"
OOD_FILE = "ood.safetensors"
#: A text encoder travels as a Hugging Face folder: weights, tokenizer and config, each
#: recorded with its sha256 like every other file.
ENCODER_DIR = "encoder"
ENCODER_WEIGHTS = f"{ENCODER_DIR}/model.safetensors"
ENCODER_FILES = ("tokenizer.json", "config.json")
_VERSIONED = ("headstart", "torch", "torchvision", "timm", "onnxruntime", "scikit-learn", "numpy")


@dataclass
class BundleContents:
    """What a bundle holds once read: the tasks and their heads, a backbone reference, and the
    JSON document."""

    tasks: list[Task]
    heads: dict[str, Any]
    """The fitted head of each task, by task name."""
    backbone: BackboneRef
    info: dict[str, Any]
    ood: OodScorer | None = None
    """The out-of-distribution scorer (None for bundles written without one)."""


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries whose behaviour shapes a model's numbers."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


Weights = Path | Sequence[Path | None] | None
"""The backbone's weights to copy into a bundle: a file, or one (or None) per fused part."""


def weights_files(backbone: BackboneRef) -> list[str]:
    """The bundle file names of the backbone's weights, one per part (one for a single
    backbone: ``backbone.safetensors``, a text encoder's ``encoder/model.safetensors``)."""
    if not backbone.is_fused:
        return [ENCODER_WEIGHTS if backbone.text is not None else BACKBONE_FILE]
    return weights_files_for([part.text is not None for part in backbone.parts])


def _per_part(backbone: BackboneRef, weights: Weights) -> list[Path | None]:
    """``weights`` as one file (or None) per part, in order."""
    if weights is None or isinstance(weights, Path):
        if weights is not None and backbone.is_fused:
            raise BundleError(
                f"the fused backbone '{backbone.name}' needs one weights file per part, got one"
            )
        return [weights] * len(backbone.members)
    files = list(weights)
    if len(files) != len(backbone.members):
        raise BundleError(
            f"backbone '{backbone.name}' has {len(backbone.members)} part(s), got "
            f"{len(files)} weights file(s)"
        )
    return files


def int8_files(backbone: BackboneRef) -> list[str]:
    """The bundle file names of the backbone's int8 models, one per part
    (``backbone.int8.onnx`` for a single backbone)."""
    return [name.removesuffix(".safetensors") + INT8_SUFFIX for name in weights_files(backbone)]


def _backbone_record(backbone: BackboneRef) -> dict[str, Any]:
    # a fusion's digest is its float32 parts' (an older reader checks it without int8 models)
    record: dict[str, Any] = {
        "name": backbone.name,
        "weights_sha256": float_ref(backbone).weights_sha256,
        "feature_dim": backbone.feature_dim,
        "preprocessing": backbone.preprocessing.to_dict(),
    }
    if backbone.int8_sha256:
        record["int8_sha256"] = backbone.int8_sha256
    if backbone.text is not None:
        t = backbone.text
        record["text"] = {
            "tokenizer_sha256": t.tokenizer_sha256,
            "max_length": t.max_length,
            "pooling": t.pooling,
            "normalize": t.normalize,
        }
    if backbone.is_fused:
        record["parts"] = [_backbone_record(part) for part in backbone.parts]
    return record


def _save_arrays(arrays: dict[str, np.ndarray], path: Path) -> None:
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def write_bundle(
    path: Path,
    *,
    tasks: list[Task],
    heads: dict[str, Any],
    backbone: BackboneRef,
    backbone_weights: Weights = None,
    extra: dict[str, Any] | None = None,
    ood: OodScorer | None = None,
) -> Path:
    """Write a bundle folder at ``path`` atomically and return it.

    ``heads`` maps each task's name to its fitted head.  ``backbone_weights``: a safetensors
    file of the backbone module's state dict, copied into the bundle so it ships
    self-contained; when None, the bundle records only the weights hash and loading uses the
    registry's weights (which must match it).  A fused backbone takes one such file (or None)
    per part, in order.  ``ood``: the out-of-distribution scorer, kept in ``ood.safetensors``
    and model.json's ``"ood"``.
    """
    per_part = _per_part(backbone, backbone_weights)
    arrays: dict[str, np.ndarray] = {}
    entries = []
    for t, task in enumerate(tasks):
        head_arrays, meta = export_head(heads[task.name])
        arrays.update({f"{t}/{k}": v for k, v in head_arrays.items()})
        entries.append({"task": task.to_dict(), "head": meta})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, FOLDER_MODE)
    try:
        _save_arrays(arrays, tmp / HEAD_FILE)
        files = {HEAD_FILE: file_digest(tmp / HEAD_FILE)}
        for name, part in zip(weights_files(backbone), backbone.members, strict=True):
            if part.text is not None and not is_words(part):  # TF-IDF: no encoder
                files.update(_copy_encoder(part, tmp / Path(name).parent))
        for name, source in zip(weights_files(backbone), per_part, strict=True):
            if source is not None:
                files[name] = _copy_weights(source, tmp / name)
        for name, part in zip(int8_files(backbone), backbone.members, strict=True):
            if part.int8_path is not None:
                files[name] = _copy_int8(part, tmp / name)
        if ood is not None:
            _save_arrays(ood.arrays(), tmp / OOD_FILE)
            files[OOD_FILE] = file_digest(tmp / OOD_FILE)
        info: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": _format_version(backbone),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "tasks": entries,
            "backbone": _backbone_record(backbone),
            "head": head_summary(heads[tasks[0].name]),
            "files": files,
            "versions": library_versions(),
            **{k: v for k, v in (extra or {}).items() if k != "ood"},
            **({"ood": ood.meta()} if ood is not None else {}),
        }
        (tmp / MODEL_JSON).write_text(json.dumps(info, indent=2, sort_keys=False) + "\n")
        for file in tmp.rglob("*"):
            os.chmod(file, FOLDER_MODE if file.is_dir() else FILE_MODE)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _format_version(backbone: BackboneRef) -> int:
    """The oldest format that holds this backbone, so older readers keep reading what they can."""
    if backbone.modality == "text":
        return FORMAT_VERSION
    return FUSED_FORMAT_VERSION if backbone.is_fused else SINGLE_FORMAT_VERSION


def head_summary(head: Any) -> dict[str, Any]:
    """The head kind and parameters shown to people (a multi-label head: its labels' kind)."""
    if isinstance(head, MultiLabelHead):
        return {"kind": head.kind, "params": dict(head.params or {})}
    _, meta = export_head(head)
    return {"kind": meta["kind"], "params": meta["params"]}


def _copy_weights(source: Path, dest: Path) -> str:
    """Copy the weights into the bundle (its own file: a hard link would let an edit of the
    bundle edit the cache it came from) and return the copy's sha256, which must match the
    digest the cache recorded for ``source`` when it has one."""
    try:
        shutil.copyfile(source, dest)
    except OSError as exc:  # a full or read-only disk is the destination's, not the cache's
        raise OSError(exc.errno, exc.strerror, str(dest)) from None
    sha = file_digest(dest)
    expected = entry_digest(source)
    if expected is not None and sha != expected:
        raise BundleError(
            f"cached weights {source} do not match their sha256; remove the file and fit again"
        )
    return sha


def _copy_encoder(backbone: BackboneRef, folder: Path) -> dict[str, str]:
    """Copy a text encoder's tokenizer and config into its encoder ``folder`` in the bundle
    (its weights are copied with every backbone's); their digests, by bundle file name.  The
    tokenizer must be the one the embeddings were keyed by."""
    assert backbone.text is not None  # the caller copies only text encoders
    folder.mkdir()
    files = {}
    for name in ENCODER_FILES:
        dest = folder / name
        try:
            shutil.copyfile(backbone.text.folder / name, dest)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(exc.filename)) from None
        files[f"{folder.name}/{name}"] = file_digest(dest)
    if files[f"{folder.name}/tokenizer.json"] != backbone.text.tokenizer_sha256:
        raise BundleError(
            f"tokenizer {backbone.text.folder / 'tokenizer.json'} does not match its sha256"
        )
    return files


def _copy_int8(part: BackboneRef, dest: Path) -> str:
    """Copy a part's int8 model into the bundle; its digest must be the ref's."""
    assert part.int8_path is not None  # the caller copies only parts that have one
    try:
        shutil.copyfile(part.int8_path, dest)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(dest)) from None
    sha = file_digest(dest)
    if sha != part.int8_sha256:
        raise BundleError(
            f"int8 model {part.int8_path} does not match its sha256; quantize the backbone again"
        )
    return sha


def _replace_dir(new: Path, dest: Path) -> None:
    """Move the finished folder ``new`` to ``dest``; an old bundle there is removed only after."""
    if dest.exists():
        if not (dest / MODEL_JSON).is_file() and any(dest.iterdir()):
            raise BundleError(f"{dest} exists and is not a headstart bundle; not overwriting it")
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        new.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        new.rename(dest)


def _read_info(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise PathNotFoundError(f"model bundle not found: {path}")
    doc = path / MODEL_JSON
    if not doc.is_file():
        raise BundleError(f"{path} is not a model bundle (no {MODEL_JSON})")
    try:
        info = json.loads(doc.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{doc} is damaged: {exc}") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT_NAME:
        raise BundleError(f"{doc} is not a {FORMAT_NAME} document")
    version = info.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BundleError(f"{doc}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(
            f"{path} has bundle format {version}; this headstart reads up to "
            f"{FORMAT_VERSION}: upgrade headstart"
        )
    return info


def _verified(path: Path, name: str, info: dict[str, Any]) -> Path:
    file = path / name
    if not file.is_file():
        raise BundleError(f"bundle {path} is incomplete: {name} is missing")
    expected = info.get("files", {}).get(name)
    if not isinstance(expected, str) or file_digest(file) != expected:
        raise BundleError(f"bundle {path} is damaged: {name} does not match its sha256")
    return file


def read_bundle(path: Path) -> BundleContents:
    """Read and verify a bundle (file digests, format version); never unpickles anything."""
    path = Path(path)
    info = _read_info(path)
    try:
        arrays = load_file(str(_verified(path, HEAD_FILE, info)))
        if info["format_version"] == 1:
            tasks = [Task(DEFAULT_TASK, tuple(str(c) for c in info["classes"]))]
            heads = {DEFAULT_TASK: import_head(arrays, info["head"])}
        else:
            tasks, heads = _read_tasks(arrays, info["tasks"])
        bb = info["backbone"]
        records = bb.get("parts", [bb])
        preps = [Preprocessing.from_dict(record["preprocessing"]) for record in records]
        ood = _read_ood(path, info)
    except HeadstartError:
        raise
    except Exception as exc:  # a damaged or hand-edited bundle: say so, in one line
        raise BundleError(f"bundle {path} cannot be read: {type(exc).__name__}: {exc}") from None
    single = ENCODER_WEIGHTS if "text" in bb else BACKBONE_FILE
    names = [single] if "parts" not in bb else weights_files_for(["text" in r for r in records])
    parts = [
        _with_int8(path, info, record, _part_ref(path, info, record, prep, name), name)
        for record, prep, name in zip(records, preps, names, strict=True)
    ]
    ref = fuse(parts)
    if "parts" in bb and float_ref(ref).weights_sha256 != bb.get("weights_sha256"):
        raise BundleError(f"bundle {path} is damaged: its fused backbone's parts do not match")
    return BundleContents(tasks=tasks, heads=heads, backbone=ref, info=info, ood=ood)


def weights_files_for(texts: Sequence[bool]) -> list[str]:
    """The weights file names of a fused backbone's parts, each ``True`` of ``texts`` a text
    encoder: ``backbone-{i}.safetensors``, or the encoder folder's ``encoder-{i}/model.safetensors``
    (its tokenizer and config beside it)."""
    return [
        f"{ENCODER_DIR}-{i}/model.safetensors" if text else f"backbone-{i}.safetensors"
        for i, text in enumerate(texts)
    ]


def _part_ref(
    path: Path, info: dict[str, Any], record: dict[str, Any], prep: Preprocessing, file: str
) -> BackboneRef:
    """One backbone (a single one, or one part of a fusion) from its record: its weights file
    in the bundle when there is one (checked against its digest), else the registry's."""
    if record.get("name") == WORDS and "text" in record:
        return words_ref()  # a TF-IDF model: its head holds everything
    if file not in info.get("files", {}):
        return _registry_ref(record, path)
    text = None
    if "text" in record:
        encoder = Path(file).parent.as_posix()  # encoder/, or a fused part's encoder-{i}/
        for name in ENCODER_FILES:
            _verified(path, f"{encoder}/{name}", info)
        t = record["text"]
        if info["files"][f"{encoder}/tokenizer.json"] != t["tokenizer_sha256"]:
            raise BundleError(f"bundle {path} is damaged: its tokenizer is not the recorded one")
        text = TextSpec(
            path / encoder,
            str(t["tokenizer_sha256"]),
            int(t["max_length"]),
            str(t["pooling"]),
            bool(t["normalize"]),
        )
    return BackboneRef(
        name=record["name"],
        weights_path=_verified(path, file, info),
        weights_sha256=record["weights_sha256"],
        preprocessing=prep,
        feature_dim=record.get("feature_dim"),
        text=text,
    )


def _with_int8(
    path: Path, info: dict[str, Any], record: dict[str, Any], ref: BackboneRef, weights: str
) -> BackboneRef:
    """``ref`` with the bundle's int8 model of it, when the record names one (verified)."""
    sha = record.get("int8_sha256")
    if not sha:
        return ref
    name = weights.removesuffix(".safetensors") + INT8_SUFFIX
    if info.get("files", {}).get(name) != sha:
        raise BundleError(f"bundle {path} is damaged: {name} is not recorded with its sha256")
    return replace(ref, int8_path=_verified(path, name, info), int8_sha256=str(sha))


def _read_ood(path: Path, info: dict[str, Any]) -> OodScorer | None:
    """The bundle's OOD scorer; None for bundles written before there was one."""
    meta = info.get("ood")
    if meta is None:
        return None
    scorer = OodScorer.from_stored(load_file(str(_verified(path, OOD_FILE, info))), meta)
    width = info["backbone"].get("feature_dim")
    if width is not None and scorer.feature_dim != width:
        raise BundleError(f"OOD bank has {scorer.feature_dim} columns, the backbone {width}")
    return scorer


def _prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)}


def _read_tasks(arrays: dict[str, np.ndarray], entries: Any) -> tuple[list[Task], dict[str, Any]]:
    """Tasks and heads of format 2 and 3 (format 2 kept each multi-label task's label heads and
    thresholds beside the task instead of in one head meta)."""
    if not isinstance(entries, list) or not entries:
        raise BundleError("bundle 'tasks' must be a non-empty list")
    tasks: list[Task] = []
    heads: dict[str, Any] = {}
    for t, entry in enumerate(entries):
        task = Task.from_dict(entry["task"])
        own = _prefixed(arrays, f"{t}/")
        if "label_heads" in entry:
            head = MultiLabelHead(entry["label_heads"][0]["kind"])
            head.estimators_ = [
                import_head(_prefixed(own, f"{j}/"), meta)
                for j, meta in enumerate(entry["label_heads"])
            ]
            head.thresholds_ = np.asarray(entry["thresholds"], dtype=np.float64)
            head.one_d_ = False
            head.classes_ = np.arange(len(head.estimators_))
            head.n_features_in_ = int(head.estimators_[0].n_features_in_)
        else:
            head = import_head(own, entry["head"])
        width = len(head.classes_)
        if width != len(task.classes):
            raise BundleError(
                f"task '{task.name}' has {len(task.classes)} classes, its head {width}"
            )
        tasks.append(task)
        heads[task.name] = head
    return tasks, heads


def _registry_ref(bb: dict[str, Any], path: Path) -> BackboneRef:
    ref = resolve_backbone(bb["name"])
    if ref.weights_sha256 != bb["weights_sha256"]:
        raise BundleError(
            f"bundle {path} was made with {bb['name']} weights {bb['weights_sha256'][:12]}, "
            f"but the weights found here are {ref.weights_sha256[:12]}"
        )
    return ref
