"""The bundle as one torch module (imports torch): the reference the ONNX export is checked by."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from headstart.backbones.preprocessing import Preprocessing
from headstart.bundle import BundleContents
from headstart.heads.torch_head import head_to_torch

__all__ = ["Classifier", "build_torch_model"]


class Classifier(nn.Module):
    """Preprocessed images (N, 3, crop, crop) -> class probabilities (N, C)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.preprocessing = preprocessing

    def logits(self, features: Tensor) -> Tensor:
        """Class logits from backbone features."""
        out: Tensor = self.head(features)
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Class probabilities, columns in the bundle's class order."""
        return torch.softmax(self.logits(self.backbone(x)), dim=1)


def build_torch_model(contents: BundleContents) -> Classifier:
    """The bundle's backbone + its head as a torch module, in eval mode; the output columns
    follow the bundle's classes."""
    head = head_to_torch(contents.head, classes=contents.classes)
    backbone = contents.backbone.build()
    return Classifier(backbone, head, contents.backbone.preprocessing).eval()
