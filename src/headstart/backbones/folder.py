"""A backbone folder: an adapted copy of a registry backbone that resolves like a name.

``headstart pretrain`` writes one; ``-b FOLDER`` (``backbone.name: FOLDER``) reads it wherever a
backbone name is resolved, so ``fit``, ``--strategy finetune``, ``rank-backbones`` and export
take it unchanged.  Two files, no pickle::

    backbone.json          {"format": 1, "base": "mobilenet_v2", "base_weights_sha256": ...,
                            "weights_sha256": ..., "feature_dim": 1280, "preprocessing": {...},
                            "method": "simclr", "trained": ["features.16", ...], "details": {...}}
    backbone.safetensors   the whole network's state dict, in the base library's key names

The resolved :class:`BackboneRef` is the base architecture (``name`` is the base's, so every
builder and exporter knows it) with this folder's weights file and digest: the digest keys the
embedding cache, so an adapted backbone's embeddings never meet the base's.  The digest recorded
in ``backbone.json`` is checked on every read; a damaged folder is a one-line error.
``backbone.json`` is written last: a folder without it is not (yet) a backbone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headstart.backbones.builtin import BUILTINS
from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.spec import (
    GENERIC_PREFIXES,
    BackboneRef,
    file_sha256,
    is_fused_name,
    split_name,
)
from headstart.backbones.text import HF_PREFIX, TEXT_BUILTINS
from headstart.errors import BackboneError, PathNotFoundError, WeightsError
from headstart.fsutil import atomic_write_text

if TYPE_CHECKING:
    from headstart.backbones.model import Backbone

__all__ = [
    "FOLDER_FORMAT",
    "FOLDER_META",
    "FOLDER_WEIGHTS",
    "FolderRecord",
    "is_folder_name",
    "read_folder",
    "read_folder_record",
    "write_folder",
]

FOLDER_FORMAT = 1
FOLDER_META = "backbone.json"
FOLDER_WEIGHTS = "backbone.safetensors"


@dataclass(frozen=True)
class FolderRecord:
    """What ``backbone.json`` says: the base backbone and its digest, this folder's weights
    digest, the preprocessing embeddings use, how it was adapted and which blocks trained."""

    base: str
    base_weights_sha256: str
    weights_sha256: str
    feature_dim: int
    preprocessing: Preprocessing
    method: str
    trained: tuple[str, ...]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FOLDER_FORMAT,
            "base": self.base,
            "base_weights_sha256": self.base_weights_sha256,
            "weights_sha256": self.weights_sha256,
            "feature_dim": self.feature_dim,
            "preprocessing": self.preprocessing.to_dict(),
            "method": self.method,
            "trained": list(self.trained),
            "details": self.details,
        }


def is_folder_name(name: str) -> bool:
    """True when ``name`` names a folder rather than a registry backbone: it is no built-in or
    prefixed name, and it is a path (has a separator, starts with ``.`` or ``~``, or is an
    existing folder)."""
    if name in BUILTINS or name in TEXT_BUILTINS:
        return False
    if is_fused_name(name) and not Path(name).is_dir():
        return False
    if name.startswith((*GENERIC_PREFIXES, HF_PREFIX)):
        return False
    pathlike = "/" in name or os.sep in name or name.startswith((".", "~"))
    return pathlike or Path(name).is_dir()


def read_folder_record(folder: str | Path) -> FolderRecord:
    """``backbone.json`` of ``folder``, checked; a missing folder or file, bad JSON or an
    unknown format is a one-line error."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise PathNotFoundError(f"backbone folder not found: {path}")
    meta = path / FOLDER_META
    if not meta.is_file():
        raise BackboneError(
            f"{path} is not a backbone folder (no {FOLDER_META}); make one with "
            "`headstart pretrain DATA -o FOLDER`, or name a backbone (see `headstart backbones`)"
        )
    try:
        raw = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BackboneError(f"cannot read {meta}: {exc}") from None
    if not isinstance(raw, dict) or raw.get("format") != FOLDER_FORMAT:
        said = raw.get("format") if isinstance(raw, dict) else None
        raise BackboneError(
            f"{meta} has format {said!r}, this headstart reads {FOLDER_FORMAT} "
            "(written by another version?)"
        )
    try:
        return FolderRecord(
            base=str(raw["base"]),
            base_weights_sha256=str(raw["base_weights_sha256"]),
            weights_sha256=str(raw["weights_sha256"]),
            feature_dim=int(raw["feature_dim"]),
            preprocessing=Preprocessing.from_dict(raw["preprocessing"]),
            method=str(raw["method"]),
            trained=tuple(str(t) for t in raw.get("trained", [])),
            details=dict(raw.get("details") or {}),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BackboneError(f"{meta} is incomplete or malformed ({exc!r})") from None


def read_folder(folder: str | Path) -> BackboneRef:
    """The :class:`BackboneRef` of a backbone folder: its base architecture with the folder's
    weights, checked against the digest ``backbone.json`` records."""
    record = read_folder_record(folder)
    path = Path(folder).expanduser()
    split_name(record.base)  # an unknown base: one line naming the known ones
    weights = path / FOLDER_WEIGHTS
    if not weights.is_file():
        raise WeightsError(f"backbone folder {path} has no {FOLDER_WEIGHTS}: it is incomplete")
    sha = file_sha256(weights)
    if sha != record.weights_sha256:
        raise WeightsError(
            f"{weights} has sha256 {sha[:12]}..., {FOLDER_META} records "
            f"{record.weights_sha256[:12]}...: the folder is damaged; pretrain it again"
        )
    return BackboneRef(record.base, weights, sha, record.preprocessing, record.feature_dim)


def write_folder(
    folder: Path,
    backbone: Backbone,
    base: BackboneRef,
    *,
    method: str,
    trained: Sequence[str],
    details: dict[str, Any],
) -> BackboneRef:
    """Write ``backbone`` (adapted from ``base``) as a backbone folder; returns its ref.  The
    weights go first, ``backbone.json`` last (both atomically)."""
    # torch is imported only when a network is really saved
    from headstart.backbones.model import save_weights

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / FOLDER_META).unlink(missing_ok=True)
    sha = save_weights(backbone, folder / FOLDER_WEIGHTS)
    record = FolderRecord(
        base=base.name,
        base_weights_sha256=base.weights_sha256,
        weights_sha256=sha,
        feature_dim=int(backbone.feature_dim),
        preprocessing=base.preprocessing,
        method=method,
        trained=tuple(trained),
        details=details,
    )
    atomic_write_text(folder / FOLDER_META, json.dumps(record.to_dict(), indent=2) + "\n")
    return read_folder(folder)
