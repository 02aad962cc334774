"""The bundle as one torch module (imports torch): the reference the ONNX export is checked by."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from headstart.backbones.preprocessing import Preprocessing
from headstart.bundle import BundleContents
from headstart.data.manifest import Task
from headstart.heads.torch_head import task_module

__all__ = ["Classifier", "build_torch_model"]


class Classifier(nn.Module):
    """Preprocessed images (N, 3, crop, crop) -> every task's probabilities, concatenated.

    Each task's columns follow its classes, tasks in order: softmax for a multi-class task,
    one sigmoid per label for a multi-label task.  :meth:`task_probabilities` gives them apart.
    """

    def __init__(
        self,
        backbone: nn.Module,
        heads: list[nn.Module],
        tasks: list[Task],
        preprocessing: Preprocessing,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        # a list, not a dict: task names may hold characters a module name may not
        self.heads = nn.ModuleList(heads)
        self.tasks = list(tasks)
        self.preprocessing = preprocessing

    def task_probabilities(self, features: Tensor) -> list[Tensor]:
        """Each task's probabilities (N, C_t) from backbone features, in task order."""
        out = []
        for task, head in zip(self.tasks, self.heads, strict=True):
            logits: Tensor = head(features)
            out.append(torch.sigmoid(logits) if task.multi_label else torch.softmax(logits, dim=1))
        return out

    def forward(self, x: Tensor) -> Tensor:
        """Every task's probabilities side by side (N, sum of C_t), tasks in order."""
        per_task = self.task_probabilities(self.backbone(x))
        return per_task[0] if len(per_task) == 1 else torch.cat(per_task, dim=1)


def build_torch_model(contents: BundleContents) -> Classifier:
    """The bundle's backbone + one head module per task, in eval mode; each task's columns
    follow its classes."""
    heads = [task_module(task, contents.heads[task.name]) for task in contents.tasks]
    backbone = contents.backbone.build()
    return Classifier(backbone, heads, contents.tasks, contents.backbone.preprocessing).eval()
