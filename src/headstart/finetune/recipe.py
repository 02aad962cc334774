"""The freeze → unfreeze recipe: backbone blocks, which of them train, per-block learning rates.

A backbone is cut into an ordered list of blocks (input side first): the top-level children of
the wrapped model, with a container of several blocks (torchvision ``features``, timm
``blocks``, ResNet ``layerN``) expanded one level, and the library's own ImageNet classifier left
out.  That is the grouping timm's ``param_groups_layer_decay`` uses for its models, applied the
same way to torchvision ones (MobileNetV2: ``features[i]``).

Layer-wise learning-rate decay (as timm / BEiT / fastai's discriminative rates): the head trains
at ``lr``, the last block at ``lr * backbone_lr_ratio``, and each block closer to the input at
``layer_decay`` times the rate of the one above it.  Biases and normalisation weights get no
weight decay (timm's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from headstart.backbones.model import Backbone
from headstart.finetune.text import TextEncoder

__all__ = [
    "BlockGroup",
    "backbone_blocks",
    "frozen_modules",
    "param_groups",
    "set_batchnorm_eval",
    "text_blocks",
]


@dataclass(frozen=True)
class BlockGroup:
    """One block of the backbone: its dotted name and module."""

    name: str
    module: nn.Module


def _classifier_root(backbone: Backbone) -> str:
    """Top-level child name of the library's ImageNet classifier ('' when none)."""
    model: Any = backbone.model
    if backbone.library == "timm":
        get = getattr(model, "get_classifier", None)
        classifier = get() if callable(get) else None
        for name, child in model.named_children():
            if child is classifier:
                return str(name)
        return ""
    head_path: str = backbone._head_path
    return head_path.split(".")[0]


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def text_blocks(model: nn.Module) -> list[BlockGroup]:
    """A Hugging Face encoder's blocks, input side first: ``embeddings``, then each layer of
    the encoder's layer list (``encoder.layer.0`` ... for BERT and MPNet, DistilBERT's
    ``transformer.layer.i``), with the container's other parameters (MPNet's relative
    attention bias) just before the layers.  The ``pooler`` is left out: mean or first-token
    pooling never reads it, and a parameter without gradient would stall DDP."""
    blocks: list[BlockGroup] = []
    for name, child in model.named_children():
        if name == "pooler" or not _has_params(child):
            continue
        lists = [(n, m) for n, m in child.named_children() if isinstance(m, nn.ModuleList)]
        if not lists:
            blocks.append(BlockGroup(name, child))
            continue
        for sub, module in child.named_children():
            if not isinstance(module, nn.ModuleList) and _has_params(module):
                blocks.append(BlockGroup(f"{name}.{sub}", module))
        for sub, layers in lists:
            blocks += [BlockGroup(f"{name}.{sub}.{i}", m) for i, m in enumerate(layers)]
    return blocks


def backbone_blocks(backbone: Backbone | TextEncoder) -> list[BlockGroup]:
    """The trainable blocks of ``backbone``, input side first (modules without parameters
    and the ImageNet classifier are left out; a text encoder: :func:`text_blocks`)."""
    if isinstance(backbone, TextEncoder):
        return text_blocks(backbone.model)
    skip = _classifier_root(backbone)
    blocks: list[BlockGroup] = []
    for name, child in backbone.model.named_children():
        if name == skip or not any(True for _ in child.parameters()):
            continue
        children = list(child.named_children())
        if isinstance(child, nn.Sequential | nn.ModuleList) and len(children) > 1:
            blocks.extend(
                BlockGroup(f"{name}.{sub}", module)
                for sub, module in children
                if any(True for _ in module.parameters())
            )
        else:
            blocks.append(BlockGroup(name, child))
    return blocks


def frozen_modules(blocks: list[BlockGroup], unfreeze_last: int | None) -> list[nn.Module]:
    """Blocks that never train: all but the last ``unfreeze_last`` (none when ``None``)."""
    if unfreeze_last is None or unfreeze_last >= len(blocks):
        return []
    keep = len(blocks) - unfreeze_last
    return [b.module for b in blocks[:keep]]


def set_batchnorm_eval(module: nn.Module) -> None:
    """Put every normalisation layer with running statistics of ``module`` in eval mode, so a
    frozen block's statistics stay those of pretraining (the Keras/fastai frozen-BN trap)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _split_decay(
    params: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float, tag: str
) -> list[dict[str, Any]]:
    decay = [p for _, p in params if p.ndim > 1]
    no_decay = [p for _, p in params if p.ndim <= 1]
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay, "name": tag})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": tag + ":nd"})
    return groups


def param_groups(
    head: nn.Module,
    blocks: list[BlockGroup],
    *,
    lr: float,
    backbone_lr_ratio: float,
    layer_decay: float,
    weight_decay: float,
    unfreeze_last: int | None = None,
) -> list[dict[str, Any]]:
    """AdamW parameter groups: the head first, then trainable blocks from the top down, each
    group tagged ``name`` (``head`` or the block name) for the schedules and the logs."""
    groups = _split_decay(list(head.named_parameters()), lr, weight_decay, "head")
    trainable = blocks if unfreeze_last is None else blocks[len(blocks) - unfreeze_last :]
    rate = lr * backbone_lr_ratio
    for block in reversed(trainable):
        params = [(n, p) for n, p in block.module.named_parameters() if p.requires_grad]
        groups.extend(_split_decay(params, rate, weight_decay, block.name))
        rate *= layer_decay
    return groups
