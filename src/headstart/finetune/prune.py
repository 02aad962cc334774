"""Channel pruning of a bundle's backbone, a short recovery fine-tune, a bundle that loads.

Why whole channels: zeroing single weights (unstructured sparsity) leaves every tensor its
shape, and the dense CPU kernels multiply the zeros just as fast (``benchmarks/unstructured.py``
measures it); removing channels makes the layers narrower, so the same kernels do less work.

What :func:`prune_backbone` removes: ``ratio`` of the channels of every prunable group of the
network's convolutions, layer by layer (each group loses ``ratio`` of its channels; no global
ranking), chosen by the L2 norm of the group's weights (torch-pruning's magnitude importance).
torch-pruning's dependency graph couples what must shrink together: the depthwise convolution
and BatchNorm after a channel, the layers reading it, every branch of a residual addition.
Widths are rounded down to multiples of 8: oneDNN's blocked kernels want them (mobilenet_v2 at
30% with unrounded widths measured no faster than the dense network; rounded, 1.6x).  Kept
whole: the channels that become the pooled features (the last convolution, with everything tied
to it) and the library's ImageNet classifier, so the feature width, and so the head's input and
the embedding size, stay those of the original.  Attention layers are refused: their head
structure is not in the record below.

:func:`prune` then recovers by distillation from the unpruned model (:mod:`headstart.finetune.
distill`: the fine-tuning recipe on DATA, starting from the pruned network, every block training
from the first epoch, with the unpruned model's probabilities as soft targets beside the
labels): a distillation run folder (``distill.json`` names the unpruned model as the teacher)
whose ``finetune.json`` has a ``pruning`` block (ratio; parameters and multiply-accumulates
per image before and after, as
``torch_pruning.utils.count_ops_and_params`` counts them on the backbone network at its input
size, the ImageNet classifier included).  The weights file records the narrower layers
(:mod:`headstart.backbones.model`), so loading, predicting, serving, embedding and exporting a
pruned bundle need nothing new.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from headstart.backbones import require_single
from headstart.backbones.model import (
    Backbone,
    apply_architecture,
    build_backbone,
    changed_shapes,
    module_shapes,
)
from headstart.backbones.registry import unweighted_ref
from headstart.cache import CacheRoot
from headstart.config import FitConfig
from headstart.data import Manifest
from headstart.embedding import scan_data
from headstart.errors import BackboneError, ConfigError, DataError
from headstart.evaluation import label_columns
from headstart.model import Model, load
from headstart.result import FitResult
from headstart.runfolder import RunFolder

__all__ = ["ROUND_TO", "Pruning", "check_ratio", "prune", "prune_backbone", "read_pruning"]

#: Pruned widths are multiples of this (see the module docstring).
ROUND_TO = 8


@dataclass(frozen=True)
class Pruning:
    """What a pruning did: the ratio asked for, and the network's size and cost before and
    after (parameters; multiply-accumulates for one image at the backbone's input size)."""

    ratio: float
    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    modules_changed: int

    def to_dict(self) -> dict[str, Any]:
        """The ``pruning`` block of ``finetune.json``."""
        return asdict(self)


def check_ratio(ratio: float) -> None:
    """A one-line ``ConfigError`` unless 0 < ``ratio`` < 1."""
    if not 0.0 < ratio < 1.0:
        raise ConfigError(f"pruning ratio {ratio} must be between 0 and 1 (the share of channels)")


def prune_backbone(backbone: Backbone, ratio: float, *, round_to: int = ROUND_TO) -> Pruning:
    """Remove ``ratio`` of the channels of ``backbone``'s convolutions in place (see the module
    docstring) and add the changed layers to ``backbone.architecture``, which
    :func:`~headstart.backbones.model.save_weights` writes beside the weights.  One-line
    ``BackboneError`` for a network this cannot prune and record (attention layers, no
    classifier to keep the feature width by, layers other than Conv2d, BatchNorm, Linear
    changed)."""
    check_ratio(ratio)
    model = backbone.model
    attention = _attention(model)
    if attention is not None:
        raise BackboneError(
            f"channel pruning supports convolutional backbones; '{backbone.name}' has attention "
            f"layers ({type(attention).__name__})"
        )
    head = _classifier(backbone)
    crop = backbone.preprocessing.crop
    example = torch.zeros(1, 3, crop, crop)
    before = module_shapes(model)
    macs0, params0 = tp.utils.count_ops_and_params(model, example)
    backbone.eval()
    with torch.inference_mode(False), torch.enable_grad():  # the graph is traced by autograd
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
        pruner = tp.pruner.BasePruner(
            model,
            example,
            importance=tp.importance.MagnitudeImportance(p=2),
            pruning_ratio=ratio,
            ignored_layers=[head, *_feature_layers(graph, head, model)],
            round_to=round_to,
        )
        pruner.step()
    with torch.inference_mode():
        # a forward through the Backbone drops what the traces captured on the way and
        # checks that the pooled features kept their width
        width = int(backbone(example).shape[1])
    if width != backbone.feature_dim:
        raise BackboneError(
            f"pruning '{backbone.name}' changed its feature width ({backbone.feature_dim} -> "
            f"{width}); this architecture cannot be pruned here"
        )
    macs1, params1 = tp.utils.count_ops_and_params(model, example)
    changed = changed_shapes(before, module_shapes(model))
    backbone.architecture = {**backbone.architecture, **changed}
    _check_recordable(backbone)
    return Pruning(
        ratio, int(params0), int(params1), int(macs0), int(macs1), modules_changed=len(changed)
    )


def _attention(model: nn.Module) -> nn.Module | None:
    """The first attention layer (torch's, or any module with heads, as timm's)."""
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention) or hasattr(module, "num_heads"):
            return module
    return None


def _classifier(backbone: Backbone) -> nn.Linear:
    """The library's classifier: its input is the pooled features, whose width stays."""
    model: Any = backbone.model
    if backbone.library == "timm":
        head = model.get_classifier()
    else:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    if not isinstance(head, nn.Linear):
        raise BackboneError(
            f"'{backbone.name}' has no Linear classifier after its pooled features; pruning "
            "keeps the feature width by it"
        )
    return head


def _feature_layers(graph: Any, head: nn.Linear, model: nn.Module) -> list[nn.Module]:
    """The layers whose output channels become the classifier's inputs (the last convolution
    and everything a residual addition ties to it): pruned, they would narrow the features."""
    group = graph.get_pruning_group(head, tp.prune_linear_in_channels, idxs=[0])
    own = {id(m) for m in model.modules()}
    return [
        dep.target.module
        for dep, _ in group
        if graph.is_out_channel_pruning_fn(dep.handler) and id(dep.target.module) in own
    ]


def _check_recordable(backbone: Backbone) -> None:
    """The architecture record must rebuild the pruned network from the library's: resize a
    fresh one by it and compare every tensor's shape (what loading the bundle will do)."""
    fresh = build_backbone(unweighted_ref(backbone.name), pretrained=False).model
    state = backbone.model.state_dict()
    try:
        apply_architecture(fresh, backbone.architecture, state, "the pruned network")
    except BackboneError:
        own = fresh.state_dict()
        wrong = next(k for k in own if k in state and own[k].shape != state[k].shape)
        name = wrong.rpartition(".")[0]
        kind = type(fresh.get_submodule(name)).__name__
        raise BackboneError(
            f"pruning '{backbone.name}' changed '{name}' ({kind}), a layer its weights file "
            "cannot record; channel pruning supports networks of Conv2d, BatchNorm and Linear "
            "layers"
        ) from None


def _recovery_config(config: FitConfig, model: Model) -> FitConfig:
    """The fine-tuning recipe on the bundle's backbone and label columns, every block
    training from the first epoch at the head's rate: pruning changed the features (cosine to
    the unpruned ones about 0.4 on mobilenet_v2 at 30%), so a head-only epoch on them is
    wasted and the whole network has to relearn."""
    ref = model.backbone_ref
    backbone = config.backbone.model_copy(
        update={"name": ref.name, "weights": ref.weights_path, "pretrained": True}
    )
    # every block relearns at the head's rate, as when training from scratch: the layer-decayed
    # rates of fine-tuning (1e-4 and below) barely moved the pruned network (clothing_small:
    # val accuracy 53% -> 55% over two epochs at 30%)
    train = config.train.model_copy(
        update={"frozen_epochs": 0, "backbone_lr_ratio": 1.0, "layer_decay": 1.0}
    )
    config = config.model_copy(update={"train": train})
    data = config.data
    if data.label_column == "label":
        data = data.model_copy(update={"label_column": label_columns(model)})
    return config.model_copy(update={"backbone": backbone, "data": data})


def _with_model_tasks(manifest: Manifest, model: Model) -> Manifest:
    """``manifest`` answering the model's tasks (its classes, in its order), after checking
    that the data has those tasks and no label the model does not know."""
    names = [t.name for t in model.tasks]
    have = [t.name for t in manifest.targets]
    if have != names:
        raise DataError(
            f"the model answers tasks {', '.join(names)}; the data has {', '.join(have)} "
            "(set data.label_column to the model's columns)"
        )
    for ours, theirs in zip(manifest.targets, model.tasks, strict=True):
        if ours.multi_label != theirs.multi_label:
            raise DataError(f"task '{ours.name}' is multi-label in only one of data and model")
        seen = {label for s in manifest.samples for label in s.labels[ours.name]}
        unknown = sorted(seen - set(theirs.classes))
        if unknown:
            raise DataError(
                f"labels of task '{ours.name}' the model does not know: {', '.join(unknown)}; "
                f"its classes: {', '.join(theirs.classes)}"
            )
    return replace(manifest, targets=tuple(model.tasks))


def prune(
    model_dir: str | Path,
    data: str | Path,
    config: FitConfig,
    run_dir: str | Path,
    *,
    ratio: float = 0.3,
    overwrite: bool = False,
    progress: bool = True,
) -> FitResult:
    """Prune ``ratio`` of the channels of the bundle ``model_dir``'s backbone, fine-tune the
    pruned network on ``data`` (the recipe of ``config``'s ``train`` section; its backbone and,
    unless set, label columns are the bundle's) and write the run folder ``run_dir``, whose
    ``finetune.json`` has a ``pruning`` block (:class:`Pruning`).  A fused bundle is refused
    in one line.  Not resumable: a killed run starts again."""
    check_ratio(ratio)
    cache = CacheRoot.for_config(config)
    model = load(model_dir, cache=cache)
    require_single(model.backbone_ref, "pruning", "prune one of its parts' models")
    RunFolder(run_dir).check_output(overwrite)
    cfg = _recovery_config(config, model)
    _with_model_tasks(
        scan_data(data, cfg), model
    )  # the data's tasks must be the model's: checked first
    t0 = time.perf_counter()
    ref = model.backbone_ref
    backbone = ref.build()
    pruning = prune_backbone(backbone, ratio)
    record = {**pruning.to_dict(), "seconds": round(time.perf_counter() - t0, 3)}
    # lazy: distill imports this module's layer peers; the recovery is a distillation
    from headstart.finetune.distill import distill

    return distill(
        model_dir,
        data,
        cfg,
        run_dir,
        student=ref.name,
        overwrite=overwrite,
        progress=progress,
        start=(ref, backbone),
        pruning=record,
    )


def read_pruning(run_dir: str | Path) -> Pruning | None:
    """The ``pruning`` block of a run's ``finetune.json`` (None for a run that pruned nothing)."""
    path = Path(run_dir) / "finetune.json"
    if not path.is_file():
        return None
    block = json.loads(path.read_text(encoding="utf-8")).get("pruning")
    if block is None:
        return None
    return Pruning(**{k: v for k, v in block.items() if k in Pruning.__dataclass_fields__})
