"""What a backbone is, before any weights are found or any model is built: names, specs, the
resolved reference that keys every cache, and file hashing.  Shared by the registry and the
generic (timm/torchvision) resolution, so neither needs the other at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from headstart.backbones.builtin import BUILTINS
from headstart.backbones.preprocessing import Preprocessing
from headstart.errors import BackboneError
from headstart.fsutil import file_digest

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
    "offline",
    "split_name",
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
        # torch loads here, when a model is really built: resolving and caching need none
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


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (memoised per process on path, size and mtime)."""
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _SHA_MEMO:
        _SHA_MEMO[memo_key] = file_digest(path)
    return _SHA_MEMO[memo_key]


def offline() -> bool:
    """True when downloads must not be tried (HEADSTART_OFFLINE or HF_HUB_OFFLINE set)."""
    return any(
        os.environ.get(var, "").lower() in {"1", "true", "yes"}
        for var in ("HEADSTART_OFFLINE", "HF_HUB_OFFLINE")
    )
