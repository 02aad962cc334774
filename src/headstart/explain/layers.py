"""Which layer of a backbone a CAM method reads, and how its output becomes (N, C, H, W).

CAM methods weight the channels of one late spatial layer.  The choice per family:

* torchvision MobileNet / EfficientNet / other ``features`` CNNs: ``features[-1]``
* torchvision ResNet / ResNeXt / RegNet-style: ``layer4`` (or the last conv-bearing child)
* timm EfficientNet family (incl. ``tf_efficientnet_lite0``): ``bn2`` (after ``conv_head``)
* timm vision transformers (``blocks`` + prefix tokens): the last block's ``norm1``, with the
  class/prefix tokens dropped and the patch tokens reshaped to their grid
* other timm CNNs: the module named by the last entry of ``feature_info``
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from headstart.errors import BackboneError

__all__ = ["CamLayer", "cam_layer"]

ReshapeTransform = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class CamLayer:
    """The layer to read, its dotted name (for messages), and an optional reshape of its output."""

    module: nn.Module
    name: str
    reshape: ReshapeTransform | None = None


def _token_grid(num_prefix_tokens: int) -> ReshapeTransform:
    """(N, prefix + H*W, C) tokens -> (N, C, H, W), dropping the class/prefix tokens."""

    def reshape(tokens: Tensor) -> Tensor:
        patches = tokens[:, num_prefix_tokens:, :]
        side = math.isqrt(patches.shape[1])
        if side * side != patches.shape[1]:
            raise BackboneError(
                f"cannot reshape {patches.shape[1]} patch tokens to a square grid for a CAM"
            )
        return patches.reshape(patches.shape[0], side, side, patches.shape[2]).permute(0, 3, 1, 2)

    return reshape


def _has_conv(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in module.modules())


def _torchvision_layer(model: nn.Module) -> CamLayer:
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and len(features) > 0:
        return CamLayer(features[-1], "features.-1")
    layer4 = getattr(model, "layer4", None)
    if isinstance(layer4, nn.Module):
        return CamLayer(layer4, "layer4")
    last = None
    for name, child in model.named_children():
        if _has_conv(child):
            last = (name, child)
    if last is None:
        raise BackboneError(f"no convolutional stage found in {type(model).__name__} for a CAM")
    return CamLayer(last[1], last[0])


def _timm_layer(model: Any) -> CamLayer:
    blocks = getattr(model, "blocks", None)
    prefix = getattr(model, "num_prefix_tokens", None)
    if isinstance(blocks, nn.Sequential) and isinstance(prefix, int) and len(blocks) > 0:
        norm1 = getattr(blocks[-1], "norm1", None)
        if isinstance(norm1, nn.Module):
            return CamLayer(norm1, f"blocks.{len(blocks) - 1}.norm1", _token_grid(prefix))
    if isinstance(getattr(model, "conv_head", None), nn.Module):
        bn2 = getattr(model, "bn2", None)
        if isinstance(bn2, nn.Module):
            return CamLayer(bn2, "bn2")
        return CamLayer(model.conv_head, "conv_head")
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and isinstance(info[-1].get("module"), str):
        name = info[-1]["module"]
        return CamLayer(model.get_submodule(name), name)
    raise BackboneError(f"cannot choose a CAM layer for timm model {type(model).__name__}")


def cam_layer(model: nn.Module, library: str) -> CamLayer:
    """The layer a CAM method should read in ``model`` (a timm or torchvision classifier)."""
    if library == "timm":
        return _timm_layer(model)
    return _torchvision_layer(model)
