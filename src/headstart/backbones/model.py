"""The :class:`Backbone` module (imports torch): pooled features plus the ImageNet head.

The wrapped model keeps its library's own state-dict key names, so
``backbone.model.state_dict()`` saved with :func:`save_weights` loads back through
``resolve_backbone(name, weights=FILE)``.

A channel-pruned network (:mod:`headstart.finetune.prune`) is its library's architecture with
some layers narrower.  Its weights file says which, without pickle: the safetensors metadata
entry :data:`ARCHITECTURE_KEY` holds JSON ``{"version": 1, "modules": {name: {"type": kind,
attr: int, ...}}}`` with the shape attributes of every module whose shape differs from the
library's (kind ``Conv2d``: in_channels, out_channels, groups; ``BatchNorm``: num_features;
``Linear``: in_features, out_features).  :func:`build_backbone` resizes those modules of the
freshly built architecture before loading the state dict, so everything that builds a backbone
from a bundle (predict, serve, embeddings in torch or ONNX Runtime, export) runs a pruned one
unchanged; the file's sha256, metadata included, keys its caches as any other weights'.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from headstart.backbones.builtin import BUILTINS, torch_hub_checkpoints
from headstart.backbones.generic import torchvision_weights
from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.spec import BackboneRef, file_sha256, split_name
from headstart.errors import BackboneError, WeightsError

__all__ = [
    "ARCHITECTURE_KEY",
    "Backbone",
    "apply_architecture",
    "build_backbone",
    "changed_shapes",
    "load_state_file",
    "module_shapes",
    "read_architecture",
    "save_weights",
]

#: The safetensors metadata key of a pruned network's architecture record (module docstring).
ARCHITECTURE_KEY = "headstart.architecture"
_RECORD_VERSION = 1

#: The shape attributes recorded per kind of module (what channel pruning changes).
_SHAPES: dict[str, tuple[str, ...]] = {
    "Conv2d": ("in_channels", "out_channels", "groups"),
    "BatchNorm": ("num_features",),
    "Linear": ("in_features", "out_features"),
}

#: A module name -> its kind ("type") and shape attributes.
Shapes = dict[str, dict[str, Any]]


class Backbone(nn.Module):
    """A pretrained model in eval mode: ``forward(x)`` gives (N, feature_dim) pooled features."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        library: str,
        preprocessing: Preprocessing,
        weights_sha256: str,
        architecture: Shapes | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        # the modules whose shapes differ from the library's (a pruned network); empty: as built
        self.architecture: Shapes = dict(architecture or {})
        self.model = model
        self.library = library
        self.preprocessing = preprocessing
        self.weights_sha256 = weights_sha256
        self._head_path = "" if library == "timm" else _torchvision_head_path(model)
        self._pooled: list[Tensor] = []
        if self._head_path:
            # The head's input is the pooled feature vector; capture it on the way through.
            head = model.get_submodule(self._head_path)
            head.register_forward_pre_hook(self._capture)
        n_classes = _num_classes(model, library, self._head_path)
        self.imagenet_classes: list[str] | None = (
            _imagenet_categories() if n_classes == 1000 else None
        )
        self.eval()
        with torch.inference_mode():
            # at the real input size: fixed-size models (ViT) reject anything else
            size = preprocessing.crop
            self.feature_dim: int = int(self(torch.zeros(1, 3, size, size)).shape[1])

    def _capture(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._pooled.append(args[0])

    def forward(self, x: Tensor) -> Tensor:
        """Pooled, pre-classifier features (N, feature_dim)."""
        if self.library == "timm":
            model: Any = self.model
            return model.forward_head(model.forward_features(x), pre_logits=True)
        self._pooled.clear()
        self.model(x)
        pooled = self._pooled.pop()
        self._pooled.clear()
        return pooled.flatten(1)

    def imagenet_logits(self, x: Tensor) -> Tensor:
        """(N, 1000) ImageNet logits; ``BackboneError`` when the model has no ImageNet head."""
        if self.imagenet_classes is None:
            raise BackboneError(f"backbone '{self.name}' has no ImageNet classification head")
        out: Tensor = self.model(x)
        return out


def _torchvision_head_path(model: nn.Module) -> str:
    last = ""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if not last:
        raise BackboneError(f"cannot find the classifier of {type(model).__name__}")
    return last


def _num_classes(model: nn.Module, library: str, head_path: str) -> int:
    if library == "timm":
        return int(getattr(model, "num_classes", 0))
    head = model.get_submodule(head_path)
    return int(getattr(head, "out_features", 0))


def _imagenet_categories() -> list[str]:
    # lazy: torch takes seconds to import; only this path needs it
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


def load_state_file(path: Path) -> dict[str, Tensor]:
    """A state dict from safetensors or a ``torch.load(weights_only=True)`` file."""
    try:
        if path.suffix == ".safetensors":
            # lazy: torch takes seconds to import; only this path needs it
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unreadable for any reason: the user must supply another file
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise WeightsError(f"weights file {path} does not hold a state dict of tensors")
    return dict(state)


def load_into(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load by key names; when the names differ, map tensors one-to-one in order if shapes agree."""
    own = model.state_dict()
    if set(state) == set(own):
        wrong = next((k for k in own if own[k].shape != state[k].shape), None)
        if wrong is not None:
            raise WeightsError(
                f"weights {source} do not fit {type(model).__name__}: '{wrong}' is "
                f"{list(state[wrong].shape)} in the file, {list(own[wrong].shape)} in the "
                "architecture; pass weights saved from this architecture"
            )
        model.load_state_dict(state, strict=True)
        return
    mismatch = len(state) != len(own) or any(
        a.shape != b.shape for a, b in zip(state.values(), own.values(), strict=True)
    )
    if mismatch:
        missing = sorted(set(own) - set(state))[:3]
        raise WeightsError(
            f"weights {source} do not fit {type(model).__name__}: {len(state)} tensors for "
            f"{len(own)} (e.g. missing {missing}); pass weights saved from this architecture"
        )
    model.load_state_dict(dict(zip(own.keys(), state.values(), strict=True)), strict=True)


def _create(library: str, arch: str, pretrained_file: Path | None) -> nn.Module:
    if library == "timm":
        # lazy: torch takes seconds to import; only this path needs it
        import timm

        if pretrained_file is not None:
            overlay = {"file": str(pretrained_file)}
            return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay)
        return timm.create_model(arch, pretrained=False)
    # lazy: torch takes seconds to import; only this path needs it
    import torchvision

    if pretrained_file is not None:
        # torchvision's own path: the enum finds the file in torch.hub's checkpoint cache.
        return torchvision.models.get_model(arch, weights=torchvision_weights(arch))
    return torchvision.models.get_model(arch, weights=None)


def build_backbone(ref: BackboneRef, *, pretrained: bool = True) -> Backbone:
    """Build the model of a resolved :class:`BackboneRef` with its weights, in eval mode.

    ``pretrained=False``: the architecture with its library's own random initialisation (the
    one its authors train from scratch with; seeded by torch's global RNG) and no weights file
    read; the backbone's ``weights_sha256`` is empty because no weights identify it yet."""
    library, arch = split_name(ref.name)
    if not pretrained:
        return Backbone(ref.name, _create(library, arch, None), library, ref.preprocessing, "")
    if ref.weights_path is None:
        raise WeightsError(f"backbone '{ref.name}' has no weights file")
    builtin = ref.name in BUILTINS
    from_library_cache = not builtin and _is_library_cache(ref.weights_path)
    model = _create(library, arch, ref.weights_path if from_library_cache else None)
    architecture: Shapes = {}
    if not from_library_cache:
        state = load_state_file(ref.weights_path)
        architecture = read_architecture(ref.weights_path)
        apply_architecture(model, architecture, state, str(ref.weights_path))
        load_into(model, state, str(ref.weights_path))
    return Backbone(ref.name, model, library, ref.preprocessing, ref.weights_sha256, architecture)


def _is_library_cache(path: Path) -> bool:
    resolved = path.resolve()
    return "huggingface" in resolved.parts or resolved.parent == torch_hub_checkpoints().resolve()


def save_weights(backbone: Backbone, path: Path) -> str:
    """Write ``backbone.model``'s state dict as safetensors, atomically, with the
    architecture record of a pruned network in its metadata; returns its sha256."""
    # lazy: torch takes seconds to import; only this path needs it
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().cpu().clone().contiguous() for k, v in backbone.model.state_dict().items()
    }
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(state, tmp, metadata=_record_metadata(backbone.architecture))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file_sha256(path)


# -- the architecture record of a pruned network ---------------------------------------------
def _kind(module: nn.Module) -> str | None:
    if isinstance(module, nn.Conv2d):
        return "Conv2d"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "BatchNorm"
    if isinstance(module, nn.Linear):
        return "Linear"
    return None


def module_shapes(model: nn.Module) -> Shapes:
    """Every Conv2d, BatchNorm and Linear module of ``model`` by name: its kind and shape
    attributes."""
    out: Shapes = {}
    for name, module in model.named_modules():
        kind = _kind(module)
        if kind is not None:
            out[name] = {"type": kind, **{a: int(getattr(module, a)) for a in _SHAPES[kind]}}
    return out


def changed_shapes(before: Shapes, after: Shapes) -> Shapes:
    """The entries of ``after`` that differ from ``before`` (what a pruning changed)."""
    return {name: entry for name, entry in after.items() if before.get(name) != entry}


def _record_metadata(architecture: Shapes) -> dict[str, str] | None:
    if not architecture:
        return None
    record = {"version": _RECORD_VERSION, "modules": architecture}
    return {ARCHITECTURE_KEY: json.dumps(record, sort_keys=True)}


def read_architecture(path: Path) -> Shapes:
    """The architecture record in a safetensors file's metadata (empty when it has none, or
    the file is not safetensors); a malformed one is a one-line ``BackboneError``."""
    if path.suffix != ".safetensors":
        return {}
    # lazy: torch takes seconds to import; only this path needs it
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            text = (handle.metadata() or {}).get(ARCHITECTURE_KEY)
    except Exception as exc:  # unreadable for any reason: the user must supply another file
        raise WeightsError(f"cannot read weights file {path}: {exc}") from exc
    if text is None:
        return {}
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackboneError(f"{path}: its architecture record is not JSON ({exc})") from None
    modules = record.get("modules") if isinstance(record, dict) else None
    if not isinstance(record, dict) or record.get("version") != _RECORD_VERSION:
        raise BackboneError(
            f"{path}: its architecture record is not version {_RECORD_VERSION} "
            "(written by a newer headstart?)"
        )
    if not isinstance(modules, dict):
        raise BackboneError(f"{path}: its architecture record has no 'modules' object")
    return modules


def apply_architecture(
    model: nn.Module, architecture: Mapping[str, Any], state: Mapping[str, Tensor], source: str
) -> None:
    """Resize ``model``'s modules to the shapes ``architecture`` records (from
    :func:`read_architecture`), then check that every tensor of ``state`` fits: a record that
    names no such module, gives other than positive whole numbers, or disagrees with the
    weights is a one-line ``BackboneError`` naming ``source``.  The resized modules' tensors
    are zeros until ``state`` is loaded."""
    if not architecture:
        return
    for name, entry in architecture.items():
        module = model.get_submodule(name) if _has_module(model, name) else None
        kind = None if module is None else _kind(module)
        if module is None or kind is None:
            raise BackboneError(
                f"{source}: its architecture record names '{name}', which is no Conv2d, "
                f"BatchNorm or Linear module of {type(model).__name__}"
            )
        attrs = _SHAPES[kind]
        if not isinstance(entry, dict) or entry.get("type") != kind:
            said = entry.get("type") if isinstance(entry, dict) else entry
            raise BackboneError(
                f"{source}: its architecture record calls '{name}' a {said!r}; it is a {kind}"
            )
        values = {a: entry.get(a) for a in attrs}
        bad = next((a for a, v in values.items() if not _positive_int(v)), None)
        if bad is not None:
            raise BackboneError(
                f"{source}: its architecture record gives '{name}' {bad}={values[bad]!r}; "
                "shapes must be positive whole numbers"
            )
        _resize(module, kind, values, f"{source}: its architecture record gives '{name}'")
    own = model.state_dict()
    wrong = next((k for k in own if k in state and own[k].shape != state[k].shape), None)
    if wrong is not None:
        raise BackboneError(
            f"{source}: its architecture record does not match its weights: '{wrong}' is "
            f"{list(state[wrong].shape)} in the file, {list(own[wrong].shape)} per the record"
        )


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return bool(name)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _resize(module: nn.Module, kind: str, values: dict[str, Any], where: str) -> None:
    """Set the shape attributes and give the module zero tensors of the new shapes."""
    if kind == "Conv2d":
        conv: Any = module
        groups = values["groups"]
        if values["in_channels"] % groups or values["out_channels"] % groups:
            raise BackboneError(
                f"{where} groups={groups}, which does not divide its channels "
                f"({values['in_channels']} in, {values['out_channels']} out)"
            )
        conv.in_channels, conv.out_channels, conv.groups = (
            values["in_channels"],
            values["out_channels"],
            groups,
        )
        shape = (values["out_channels"], values["in_channels"] // groups, *conv.kernel_size)
        _replace(module, "weight", shape)
        _replace(module, "bias", (values["out_channels"],))
    elif kind == "BatchNorm":
        n = values["num_features"]
        module.num_features = n
        for tensor in ("weight", "bias", "running_mean", "running_var"):
            _replace(module, tensor, (n,))
    else:
        linear: Any = module
        linear.in_features, linear.out_features = values["in_features"], values["out_features"]
        _replace(module, "weight", (values["out_features"], values["in_features"]))
        _replace(module, "bias", (values["out_features"],))


def _replace(module: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    """Swap parameter or buffer ``name`` (when the module has one) for zeros of ``shape``."""
    current = getattr(module, name, None)
    if not isinstance(current, Tensor):
        return
    fresh = torch.zeros(shape, dtype=current.dtype, device=current.device)
    if isinstance(current, nn.Parameter):
        setattr(module, name, nn.Parameter(fresh, requires_grad=current.requires_grad))
    else:
        module.register_buffer(name, fresh)
