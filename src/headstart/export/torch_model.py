"""The bundle as one torch module (imports torch): the reference the ONNX export is checked by.

A text model's backbone is :class:`~headstart.backbones.text_model.PooledTextEncoder`: the
bundle's Hugging Face encoder (its ``encoder/`` folder) with the pooling and L2 normalisation
its :class:`~headstart.backbones.TextSpec` records, so the graph takes token ids and an attention
mask and gives the embedding the heads were fitted on (the text engine's, to the same code).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.text_model import load_text_encoder
from headstart.bundle import BundleContents
from headstart.data.manifest import Task
from headstart.heads.torch_head import ood_module, task_module

__all__ = ["Classifier", "FusedFeatures", "build_torch_model"]


class FusedFeatures(nn.Module):
    """A fused backbone: one preprocessed batch per part (each in its part's own input size
    and normalisation) -> the parts' pooled features side by side, in order."""

    def __init__(self, parts: list[nn.Module]) -> None:
        super().__init__()
        self.parts = nn.ModuleList(parts)

    def forward(self, *inputs: Tensor) -> Tensor:
        """(N, sum of the parts' feature sizes) from one (N, 3, crop_i, crop_i) per part."""
        return torch.cat([part(x) for part, x in zip(self.parts, inputs, strict=True)], dim=1)


class Classifier(nn.Module):
    """Preprocessed images (N, 3, crop, crop) -> every task's probabilities, concatenated,
    then the OOD score (one column) when the bundle has a scorer.  A fused backbone takes one
    batch per part, in order (``preprocessings``: each input's preprocessing).

    Each task's columns follow its classes, tasks in order: softmax for a multi-class task,
    one sigmoid per label for a multi-label task.  :meth:`task_probabilities` gives them apart.
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: list[nn.Module],
        tasks: list[Task],
        preprocessing: Preprocessing,
        ood: nn.Module | None = None,
        preprocessings: list[Preprocessing] | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        # a list, not a dict: task names may hold characters a module name may not
        self.heads = nn.ModuleList(heads)
        self.tasks = list(tasks)
        self.preprocessing = preprocessing
        self.preprocessings = list(preprocessings or [preprocessing])
        self.ood = ood

    def task_probabilities(self, features: Tensor) -> list[Tensor]:
        """Each task's probabilities (N, C_t) from backbone features, in task order."""
        out = []
        for task, head in zip(self.tasks, self.heads, strict=True):
            logits: Tensor = head(features)
            out.append(torch.sigmoid(logits) if task.multi_label else torch.softmax(logits, dim=1))
        return out

    def forward(self, *inputs: Tensor) -> Tensor:
        """Every task's probabilities side by side (N, sum of C_t), tasks in order, and the OOD
        score as a last column when there is a scorer."""
        features = self.backbone(*inputs)
        columns = self.task_probabilities(features)
        if self.ood is not None:
            columns.append(self.ood(features))
        return columns[0] if len(columns) == 1 else torch.cat(columns, dim=1)


def build_torch_model(contents: BundleContents) -> Classifier:
    """The bundle's backbone (every part of a fused one; a text model's encoder) + one head
    module per task (+ its OOD scorer), in eval mode; each task's columns follow its classes."""
    heads = [task_module(task, contents.heads[task.name]) for task in contents.tasks]
    ref = contents.backbone
    backbone: nn.Module
    if ref.modality == "text":
        # eager attention traces to plain ops every ONNX runtime has
        backbone = load_text_encoder(ref, attention="eager")
    elif ref.is_fused:
        backbone = FusedFeatures([p.build() for p in ref.parts])
    else:
        backbone = ref.build()
    ood = None if contents.ood is None else ood_module(contents.ood)
    preps = [part.preprocessing for part in ref.members]
    return Classifier(backbone, heads, contents.tasks, preps[0], ood, preps).eval()
