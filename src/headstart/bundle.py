"""The model bundle: one folder that holds everything needed to predict, and nothing pickled.

Layout (format version 1; version 2 adds multi-label and multi-task models)::

    model/
      model.json             classes, backbone (name, weights sha256, preprocessing), head meta,
                             metrics, resolved config, library versions, data hash, file digests
      head.safetensors       the head's learned arrays
      backbone.safetensors   the backbone's weights (optional: without it the registry's weights
                             are used, and must have the recorded sha256)

Format 2 is written only for models with several tasks or a multi-label task: ``model.json``
then holds ``tasks`` (each task's classes, kind and head meta, thresholds for multi-label) and
``head.safetensors`` every task's arrays.  Plain models stay format 1, which older headstart
versions read too.

A bundle is written to a temporary folder beside its destination and renamed into place, so a
crash never leaves a half-written bundle, and an existing bundle is only replaced by a complete one.
Readers accept every format version up to their own and refuse newer ones with a clear message.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import BackboneRef, Preprocessing
from headstart.data.manifest import Task
from headstart.errors import BundleError, HeadstartError, PathNotFoundError
from headstart.fsutil import FILE_MODE, FOLDER_MODE
from headstart.heads import export_head, import_head

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "BundleContents",
    "library_versions",
    "read_bundle",
    "write_bundle",
]

FORMAT_NAME = "headstart-bundle"
FORMAT_VERSION = 2
PLAIN_FORMAT_VERSION = 1
MODEL_JSON = "model.json"
HEAD_FILE = "head.safetensors"
BACKBONE_FILE = "backbone.safetensors"
_VERSIONED = ("headstart", "torch", "torchvision", "timm", "onnxruntime", "scikit-learn", "numpy")


@dataclass
class BundleContents:
    """What a bundle holds once read: the head, a backbone reference, and the JSON document."""

    head: Any
    backbone: BackboneRef
    info: dict[str, Any]
    tasks: list[Task] = field(default_factory=list)
    """Every task, in order; empty for a plain (format 1) model."""
    heads: dict[str, Any] = field(default_factory=dict)
    """The head of each task (multi-label tasks: a LabelSetHead); empty for a plain model."""

    @property
    def classes(self) -> list[str]:
        return list(self.info["classes"])


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries whose behaviour shapes a model's numbers."""
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _save_arrays(arrays: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def write_bundle(
    path: Path,
    *,
    head: Any,
    backbone: BackboneRef,
    backbone_weights: Path | None = None,
    classes: list[str],
    extra: dict[str, Any] | None = None,
    tasks: list[Task] | None = None,
) -> Path:
    """Write a bundle folder at ``path`` atomically and return it.

    ``backbone_weights``: a safetensors file of the backbone module's state dict, copied into the
    bundle so it ships self-contained; when None, the bundle records only the weights hash and
    loading uses the registry's weights (which must match it).  ``tasks``: for a multi-label or
    multi-task model, its tasks; ``head`` is then a mapping from task name to head.
    """
    version, task_meta = PLAIN_FORMAT_VERSION, None
    if tasks is not None:
        from headstart.tasks import export_task_heads

        arrays, task_meta = export_task_heads(tasks, head)
        kinds = sorted({_head_kind(m) for m in task_meta})
        head_meta: dict[str, Any] = {"kind": "+".join(kinds), "tasks": len(tasks)}
        version = FORMAT_VERSION
    else:
        arrays, head_meta = export_head(head)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, FOLDER_MODE)
    try:
        _save_arrays(arrays, tmp / HEAD_FILE)
        files = {HEAD_FILE: _sha256(tmp / HEAD_FILE)}
        if backbone_weights is not None:
            _link_or_copy(backbone_weights, tmp / BACKBONE_FILE)
            files[BACKBONE_FILE] = _sha256(tmp / BACKBONE_FILE)
        info: dict[str, Any] = {
            "format": FORMAT_NAME,
            "format_version": version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "classes": list(classes),
            "backbone": {
                "name": backbone.name,
                "weights_sha256": backbone.weights_sha256,
                "feature_dim": backbone.feature_dim,
                "preprocessing": backbone.preprocessing.to_dict(),
            },
            "head": head_meta,
            **({"tasks": task_meta} if task_meta is not None else {}),
            "files": files,
            "versions": library_versions(),
            **(extra or {}),
        }
        (tmp / MODEL_JSON).write_text(json.dumps(info, indent=2, sort_keys=False) + "\n")
        for file in tmp.iterdir():
            os.chmod(file, FILE_MODE)
        _replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _head_kind(meta: dict[str, Any]) -> str:
    head = meta["head"] if "head" in meta else meta["label_heads"][0]
    return str(head["kind"])


def _link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link when possible (weights files are never modified in place), else copy."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


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
    if expected and _sha256(file) != expected:
        raise BundleError(f"bundle {path} is damaged: {name} does not match its sha256")
    return file


def read_bundle(path: Path) -> BundleContents:
    """Read and verify a bundle (file digests, format version); never unpickles anything."""
    from safetensors.numpy import load_file

    path = Path(path)
    info = _read_info(path)
    try:
        arrays = load_file(str(_verified(path, HEAD_FILE, info)))
        tasks: list[Task] = []
        heads: dict[str, Any] = {}
        if "tasks" in info:
            from headstart.tasks import import_task_heads

            tasks, heads = import_task_heads(arrays, info["tasks"])
            head = heads[tasks[0].name]
        else:
            head = import_head(arrays, info["head"])
        bb = info["backbone"]
        preprocessing = Preprocessing.from_dict(bb["preprocessing"])
    except HeadstartError:
        raise
    except Exception as exc:  # a damaged or hand-edited bundle: say so, in one line
        raise BundleError(f"bundle {path} cannot be read: {type(exc).__name__}: {exc}") from None
    if BACKBONE_FILE in info.get("files", {}):
        ref = BackboneRef(
            name=bb["name"],
            weights_path=_verified(path, BACKBONE_FILE, info),
            weights_sha256=bb["weights_sha256"],
            preprocessing=preprocessing,
            feature_dim=bb.get("feature_dim"),
        )
    else:
        ref = _registry_ref(bb, path)
    return BundleContents(head=head, backbone=ref, info=info, tasks=tasks, heads=heads)


def _registry_ref(bb: dict[str, Any], path: Path) -> BackboneRef:
    from headstart.backbones import resolve_backbone

    ref = resolve_backbone(bb["name"])
    if ref.weights_sha256 != bb["weights_sha256"]:
        raise BundleError(
            f"bundle {path} was made with {bb['name']} weights {bb['weights_sha256'][:12]}, "
            f"but the weights found here are {ref.weights_sha256[:12]}"
        )
    return ref
