"""What a backbone is, before any weights are found or any model is built: names, specs, the
resolved reference that keys every cache, and file hashing.  Shared by the registry and the
generic (timm/torchvision) resolution, so neither needs the other at import time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
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
    "FUSE_SEPARATOR",
    "GENERIC_PREFIXES",
    "POPULAR_GENERIC",
    "WEIGHTS_HINT",
    "BackboneRef",
    "BackboneSpec",
    "BackboneStatus",
    "TextSpec",
    "file_sha256",
    "fuse",
    "fused_names",
    "is_fused_name",
    "offline",
    "require_single",
    "split_name",
]

#: Joins the parts of a fused backbone's name: ``mobilenet_v2+efficientnet_lite0``.
FUSE_SEPARATOR = "+"

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
class TextSpec:
    """How a text encoder turns a string into its embedding: the folder holding its tokenizer
    (``tokenizer.json``), config and weights; the longest token sequence kept (longer texts are
    truncated); the pooling over tokens; and whether the result is L2-normalised.
    ``tokenizer_sha256`` (the tokenizer.json digest) keys caches with the weights'."""

    folder: Path
    tokenizer_sha256: str
    max_length: int = 256
    pooling: str = "mean"
    normalize: bool = True

    def key(self) -> str:
        """A stable string naming what changes the numbers (used in cache keys)."""
        return (
            f"text:tokenizer={self.tokenizer_sha256}:max_length={self.max_length}"
            f":pooling={self.pooling}:normalize={self.normalize}"
        )


@dataclass(frozen=True)
class BackboneRef:
    """A resolved backbone: enough to key caches without building the model (no torch needed).

    A *fused* ref (:func:`fuse`) stands for several backbones whose embeddings are concatenated
    in order: ``parts`` holds them (empty for a single backbone), ``name`` joins their names
    with ``+``, ``weights_sha256`` hashes their digests (so nothing keyed by it meets a part's
    entries), ``feature_dim`` is the sum.  Its ``preprocessing`` is the first part's, kept only
    so code that reads one value still gets one: every fused code path must preprocess each
    part with that part's own (see :attr:`members`).

    ``int8_path`` / ``int8_sha256``: a static int8 ONNX model of this backbone
    (:func:`headstart.features.int8.quantize_ref`); when set, features come from it (ONNX Runtime
    only), its digest keys the embeddings and is checked on every read.  A fused ref is int8
    when each of its parts is.

    ``text``: set for a text encoder (:class:`TextSpec`); ``preprocessing`` is then unused
    (the image default) and :attr:`modality` is ``"text"``."""

    name: str
    weights_path: Path | None
    weights_sha256: str
    preprocessing: Preprocessing
    feature_dim: int | None
    parts: tuple[BackboneRef, ...] = ()
    int8_path: Path | None = None
    int8_sha256: str = ""
    text: TextSpec | None = None

    @property
    def modality(self) -> str:
        """``"text"`` for a text encoder (every part of a fusion must agree), else ``"image"``."""
        return "text" if self.members[0].text is not None else "image"

    @property
    def is_fused(self) -> bool:
        """True for a fusion of several backbones."""
        return bool(self.parts)

    @property
    def precision(self) -> str:
        """``"int8"`` when features come from static int8 models (every part's, for a fusion),
        else ``"fp32"``."""
        return "int8" if all(p.int8_sha256 for p in self.members) else "fp32"

    @property
    def members(self) -> tuple[BackboneRef, ...]:
        """The single backbones whose features make this one's, in column order (itself when
        it is not fused)."""
        return self.parts or (self,)

    def build(self) -> Backbone:
        """Build the model with its weights, in eval mode (imports torch); a fused ref has no
        single network to build (``BackboneError``)."""
        require_single(self, "building a network", "build each of its parts")
        # torch loads here, when a model is really built: resolving and caching need none
        from headstart.backbones.model import build_backbone

        return build_backbone(self)


def is_fused_name(name: str) -> bool:
    """True when ``name`` joins several backbones with ``+``."""
    return FUSE_SEPARATOR in name


def fused_names(name: str) -> list[str]:
    """The parts of a fused name, in order (surrounding spaces dropped); an empty or repeated
    part raises a one-line ``BackboneError``."""
    parts = [p.strip() for p in name.split(FUSE_SEPARATOR)]
    if any(not p for p in parts):
        raise BackboneError(
            f"fused backbone '{name}' has an empty part; join backbone names with "
            f"'{FUSE_SEPARATOR}', e.g. mobilenet_v2+efficientnet_lite0"
        )
    repeated = next((p for i, p in enumerate(parts) if p in parts[:i]), None)
    if repeated is not None:
        raise BackboneError(
            f"backbone '{repeated}' appears twice in '{name}'; name each part of a fusion once"
        )
    return parts


def fuse(refs: Sequence[BackboneRef]) -> BackboneRef:
    """One ref whose features are the ``refs``' features side by side, in order (fused refs
    among them are flattened into their parts); a single ref is returned as it is.  The same
    backbone (name and weights) twice raises ``BackboneError``."""
    parts = tuple(part for ref in refs for part in ref.members)
    if not parts:
        raise BackboneError("a fusion needs at least one backbone")
    if len(parts) == 1:
        return parts[0]
    seen: set[tuple[str, str]] = set()
    for part in parts:
        if (part.name, part.weights_sha256) in seen:
            raise BackboneError(
                f"backbone '{part.name}' appears twice in a fusion; name each part once"
            )
        seen.add((part.name, part.weights_sha256))
    # an int8 part's digest joins its weights' (fp32 fusions keep the key they always had)
    digests = FUSE_SEPARATOR.join(
        p.weights_sha256 + (f":int8:{p.int8_sha256}" if p.int8_sha256 else "") for p in parts
    )
    dims = [p.feature_dim for p in parts]
    return BackboneRef(
        name=FUSE_SEPARATOR.join(p.name for p in parts),
        weights_path=None,
        weights_sha256=hashlib.sha256(f"fused:{digests}".encode()).hexdigest(),
        preprocessing=parts[0].preprocessing,
        feature_dim=None if any(d is None for d in dims) else sum(d or 0 for d in dims),
        parts=parts,
    )


def require_single(backbone: BackboneRef | str, what: str, hint: str | None = None) -> None:
    """A one-line ``BackboneError`` when ``backbone`` (a ref or a name) is a fusion: ``what``
    needs one network.  ``hint`` says what to do instead (default: use one of its parts)."""
    name = backbone if isinstance(backbone, str) else backbone.name
    fused = backbone.is_fused if isinstance(backbone, BackboneRef) else is_fused_name(name)
    if not fused:
        return
    parts = ", ".join(p.strip() for p in name.split(FUSE_SEPARATOR))
    raise BackboneError(
        f"{what} needs one backbone; got the fused '{name}': "
        f"{hint or f'use one of its parts ({parts})'}"
    )


def _known() -> str:
    return ", ".join([*sorted(BUILTINS), "timm:NAME", "torchvision:NAME"])


def split_name(name: str) -> tuple[str, str]:
    """(library, architecture) for a backbone name; unknown names raise ``BackboneError``, and
    so does a fused name (it names several architectures)."""
    require_single(name, "looking up one architecture")
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
