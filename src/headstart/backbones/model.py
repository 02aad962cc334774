"""The :class:`Backbone` module (imports torch): pooled features plus the ImageNet head.

The wrapped model keeps its library's own state-dict key names, so
``backbone.model.state_dict()`` saved with :func:`save_weights` loads back through
``resolve_backbone(name, weights=FILE)``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from headstart.backbones.builtin import BUILTINS, torch_hub_checkpoints
from headstart.backbones.generic import torchvision_weights
from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.spec import BackboneRef, file_sha256, split_name
from headstart.errors import BackboneError, WeightsError

__all__ = ["Backbone", "build_backbone", "load_state_file", "save_weights"]


class Backbone(nn.Module):
    """A pretrained model in eval mode: ``forward(x)`` gives (N, feature_dim) pooled features."""

    def __init__(
        self,
        name: str,
        model: nn.Module,
        library: str,
        preprocessing: Preprocessing,
        weights_sha256: str,
    ) -> None:
        super().__init__()
        self.name = name
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
    if not from_library_cache:
        load_into(model, load_state_file(ref.weights_path), str(ref.weights_path))
    return Backbone(ref.name, model, library, ref.preprocessing, ref.weights_sha256)


def _is_library_cache(path: Path) -> bool:
    resolved = path.resolve()
    return "huggingface" in resolved.parts or resolved.parent == torch_hub_checkpoints().resolve()


def save_weights(backbone: Backbone, path: Path) -> str:
    """Write ``backbone.model``'s state dict as safetensors, atomically; returns its sha256."""
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
        save_file(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return file_sha256(path)
