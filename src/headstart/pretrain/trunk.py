"""A backbone cut in two: a frozen trunk whose activations are computed once per view and
kept, and the last blocks, which train.

The cut is at the input of the first trainable block (:func:`headstart.finetune.recipe.
backbone_blocks`, input side first).  The trunk's output is captured by a forward pre-hook on
that block, which stops the forward there.  The tail runs the backbone's own forward (so its
pooling is the one embeddings use) on a tiny dummy input, with the same hook replacing the
block's input by the kept activations: the trunk's layers see only the dummy (a 32-pixel
image costs ~4% of a 160-pixel one) and everything after the cut is exact.  This holds for
networks whose blocks form one chain (CNNs: MobileNet, EfficientNet, ResNet, ConvNeXt); a
network that will not run on the dummy (fixed-size ViTs) runs the tail at full size instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from headstart.backbones.model import Backbone
from headstart.errors import ConfigError
from headstart.finetune.recipe import BlockGroup, backbone_blocks

__all__ = ["SplitBackbone", "ViewBank"]

_DUMMY = 32


class _Stop(Exception):
    """Raised by the hook to end a trunk-only forward at the cut."""


class SplitBackbone(nn.Module):
    """``backbone`` with its last ``train_blocks`` blocks trainable and the rest frozen (eval
    mode, no gradient): :meth:`trunk` gives the activations at the cut, :meth:`tail` the pooled
    features from them."""

    def __init__(self, backbone: Backbone, train_blocks: int) -> None:
        super().__init__()
        blocks = backbone_blocks(backbone)
        if not 1 <= train_blocks <= len(blocks):
            raise ConfigError(
                f"train_blocks={train_blocks}: {backbone.name} has {len(blocks)} blocks; "
                f"train between 1 and {len(blocks)}"
            )
        self.backbone = backbone
        self.trained: list[BlockGroup] = blocks[len(blocks) - train_blocks :]
        self.trainable = nn.ModuleList([b.module for b in self.trained])
        for p in backbone.parameters():
            p.requires_grad_(False)
        for p in self.trainable.parameters():
            p.requires_grad_(True)
        self._mode = "off"
        self._held: Tensor | None = None
        self.trained[0].module.register_forward_pre_hook(self._hook)
        self._dummy = _DUMMY if self._runs_small() else backbone.preprocessing.crop

    @property
    def feature_dim(self) -> int:
        """The width of the pooled features."""
        return int(self.backbone.feature_dim)

    @property
    def trained_names(self) -> list[str]:
        """The dotted names of the trained blocks, input side first."""
        return [b.name for b in self.trained]

    def train(self, mode: bool = True) -> SplitBackbone:
        """Only the trained blocks ever leave eval mode: the trunk keeps its pretraining
        statistics (and its activations stay valid for the whole run)."""
        super().train(mode)
        self.backbone.eval()
        if mode:
            self.trainable.train()
        return self

    def _hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self._mode == "capture":
            self._held = args[0]
            raise _Stop
        if self._mode == "inject":
            return (self._held, *args[1:])
        return None

    @torch.no_grad()
    def trunk(self, images: Tensor) -> Tensor:
        """The frozen trunk's activations at the cut for a batch of normalised images."""
        self._mode = "capture"
        try:
            self.backbone(images)
        except _Stop:
            pass
        finally:
            self._mode = "off"
        held, self._held = self._held, None
        if held is None:
            raise ConfigError(f"{self.backbone.name}: the forward never reached the cut")
        return held

    def tail(self, activations: Tensor) -> Tensor:
        """Pooled features (N, feature_dim) from trunk activations; gradients reach the trained
        blocks only."""
        dummy = activations.new_zeros((activations.shape[0], 3, self._dummy, self._dummy))
        self._mode, self._held = "inject", activations
        try:
            out: Tensor = self.backbone(dummy)
        finally:
            self._mode, self._held = "off", None
        return out

    def _runs_small(self) -> bool:
        self._mode = "capture"
        try:
            with torch.no_grad():
                self.backbone(torch.zeros(1, 3, _DUMMY, _DUMMY))
        except _Stop:
            return True
        except (RuntimeError, ValueError, AssertionError):  # fixed-size models reject it
            return False
        finally:
            self._mode, self._held = "off", None
        return True


class ViewBank:
    """Trunk activations by (image, view), kept as float16 up to ``budget_mb`` (past it they
    are recomputed each time): the trunk runs once per view, not once per step."""

    def __init__(self, budget_mb: int) -> None:
        self._budget = budget_mb * 1024 * 1024
        self._used = 0
        self._kept: dict[tuple[int, int], Tensor] = {}
        self.computed = 0

    def __len__(self) -> int:
        return len(self._kept)

    def missing(self, keys: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """The keys not kept, each once, in order."""
        return list(dict.fromkeys(k for k in keys if k not in self._kept))

    def get(self, key: tuple[int, int], fresh: dict[tuple[int, int], Tensor]) -> Tensor:
        """The activations of ``key``: kept, or just computed (in ``fresh``)."""
        kept = self._kept.get(key)
        return kept if kept is not None else fresh[key]

    def keep(self, fresh: dict[tuple[int, int], Tensor]) -> None:
        """Keep the newly computed activations while the budget lasts."""
        self.computed += len(fresh)
        for key, value in fresh.items():
            size = value.numel() * 2
            if self._used + size > self._budget:
                return
            self._kept[key] = value.detach().to(torch.float16).cpu()
            self._used += size
