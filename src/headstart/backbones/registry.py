"""Backbone names -> specs and offline-first weight resolution.

``resolve_backbone`` returns a :class:`BackboneRef`: everything needed to key a cache (name,
weights sha256, preprocessing) without building the model.  For the built-ins that needs neither
torch nor torchvision; ``BackboneRef.build()`` imports torch only when the model is really needed.
Generic ``timm:NAME`` / ``torchvision:NAME`` names import their library to read the preprocessing
that travels with the weights.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from headstart.backbones.builtin import BUILTINS, BuiltinEntry
from headstart.backbones.preprocessing import Preprocessing
from headstart.errors import BackboneError, PathNotFoundError, WeightsError

if TYPE_CHECKING:
    from headstart.backbones.model import Backbone

__all__ = [
    "GENERIC_PREFIXES",
    "POPULAR_GENERIC",
    "WEIGHTS_HINT",
    "BackboneRef",
    "BackboneSpec",
    "BackboneStatus",
    "file_sha256",
    "get_spec",
    "list_backbones",
    "resolve_backbone",
    "unweighted_ref",
]

GENERIC_PREFIXES = ("timm:", "torchvision:")
POPULAR_GENERIC = (
    "timm:resnet18",
    "timm:resnet50",
    "timm:convnext_tiny",
    "timm:vit_tiny_patch16_224",
    "timm:efficientnet_b0",
    "torchvision:resnet18",
    "torchvision:resnet50",
    "torchvision:efficientnet_b0",
)
WEIGHTS_HINT = (
    "pass --weights FILE (safetensors, or a state dict loaded with torch.load(weights_only=True))"
)


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone is: feature size, size, published ImageNet top-1 and its preprocessing."""

    name: str
    feature_dim: int | None
    params: int | None
    imagenet_top1: float | None
    preprocessing: Preprocessing
    description: str


@dataclass(frozen=True)
class BackboneStatus:
    """A backbone in :func:`list_backbones`: usable here or not, and why."""

    spec: BackboneSpec
    available: bool
    detail: str


@dataclass(frozen=True)
class BackboneRef:
    """A resolved backbone: enough to key caches without building the model (no torch needed)."""

    name: str
    weights_path: Path | None
    weights_sha256: str
    preprocessing: Preprocessing
    feature_dim: int | None

    def build(self) -> Backbone:
        """Build the model with its weights, in eval mode (imports torch)."""
        from headstart.backbones.model import build_backbone

        return build_backbone(self)


def _known() -> str:
    return ", ".join([*sorted(BUILTINS), "timm:NAME", "torchvision:NAME"])


def split_name(name: str) -> tuple[str, str]:
    """(library, architecture) for a backbone name; unknown names raise ``BackboneError``."""
    if name in BUILTINS:
        return BUILTINS[name].library, BUILTINS[name].arch
    for prefix in GENERIC_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return prefix[:-1], name[len(prefix) :]
    raise BackboneError(f"unknown backbone '{name}'; known: {_known()}")


def get_spec(name: str) -> BackboneSpec:
    """The spec of a backbone name; unknown names raise ``BackboneError`` listing the known ones."""
    library, arch = split_name(name)
    if name in BUILTINS:
        e = BUILTINS[name]
        return BackboneSpec(
            name, e.feature_dim, e.params, e.imagenet_top1, e.preprocessing, e.description
        )
    from headstart.backbones import generic

    return generic.generic_spec(name, library, arch)


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (memoised per process on path, size and mtime)."""
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _SHA_MEMO:
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _SHA_MEMO[memo_key] = digest.hexdigest()
    return _SHA_MEMO[memo_key]


def _builtin_weights(name: str, entry: BuiltinEntry) -> Path:
    for path in entry.candidate_paths():
        if path.is_file():
            sha = file_sha256(path)
            if sha != entry.sha256:
                raise WeightsError(
                    f"weights file {path} for backbone '{name}' has sha256 {sha[:12]}..., "
                    f"expected {entry.sha256[:12]}...: the file is damaged or not these weights; "
                    f"reinstall it ({entry.install_hint()}) or {WEIGHTS_HINT}"
                )
            return path
    raise WeightsError(
        f"no weights found offline for backbone '{name}': install them "
        f"({entry.install_hint()}) or {WEIGHTS_HINT}"
    )


def resolve_backbone(name: str, weights: Path | None = None) -> BackboneRef:
    """Find the weights for ``name`` (offline first) and return a :class:`BackboneRef`.

    ``weights`` is a user file (safetensors or a torch state dict); its sha256 keys the caches.
    Without it, built-ins use their packaged file (checked against the known sha256) and
    ``timm:``/``torchvision:`` names use their library's cache, downloading only when online.
    Missing or mismatching weights raise ``WeightsError`` saying how to supply them.
    """
    library, arch = split_name(name)
    if weights is not None:
        weights = Path(weights).expanduser()
        if not weights.is_file():
            raise PathNotFoundError(f"weights file not found: {weights}")
    if name in BUILTINS:
        entry = BUILTINS[name]
        path = weights if weights is not None else _builtin_weights(name, entry)
        return BackboneRef(name, path, file_sha256(path), entry.preprocessing, entry.feature_dim)
    from headstart.backbones import generic

    spec = generic.generic_spec(name, library, arch)
    path = weights if weights is not None else generic.find_weights(name, library, arch)
    return BackboneRef(name, path, file_sha256(path), spec.preprocessing, spec.feature_dim)


def unweighted_ref(name: str) -> BackboneRef:
    """A ref to ``name``'s architecture without weights, for training from scratch: no weights
    file, an empty sha256, and the preprocessing of its pretrained weights (so a scratch run
    sees the same inputs as a pretrained one)."""
    spec = get_spec(name)
    return BackboneRef(name, None, "", spec.preprocessing, spec.feature_dim)


def list_backbones() -> list[BackboneStatus]:
    """The built-ins plus a few popular ``timm:``/``torchvision:`` names, with availability."""
    statuses = []
    for name in sorted(BUILTINS):
        spec = get_spec(name)
        try:
            ref = resolve_backbone(name)
            statuses.append(BackboneStatus(spec, True, f"weights: {ref.weights_path}"))
        except WeightsError as exc:
            statuses.append(BackboneStatus(spec, False, str(exc)))
    from headstart.backbones import generic

    for name in POPULAR_GENERIC:
        statuses.append(generic.generic_status(name))
    return statuses


def offline() -> bool:
    """True when downloads must not be tried (HEADSTART_OFFLINE or HF_HUB_OFFLINE set)."""
    return any(
        os.environ.get(var, "").lower() in {"1", "true", "yes"}
        for var in ("HEADSTART_OFFLINE", "HF_HUB_OFFLINE")
    )
