"""The bundle as one torch module (imports torch): the reference the ONNX export is checked by.

A text model's backbone is :class:`TextEncoder`: the bundle's Hugging Face encoder (its
``encoder/`` folder) with the pooling and L2 normalisation its :class:`TextSpec` records, so
the graph takes token ids and an attention mask and gives the embedding the heads were fitted on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from headstart.backbones import BackboneRef
from headstart.backbones.preprocessing import Preprocessing
from headstart.backbones.spec import TextSpec
from headstart.bundle import BundleContents
from headstart.data.manifest import Task
from headstart.errors import ConfigError
from headstart.heads.torch_head import ood_module, task_module

__all__ = ["POOLINGS", "Classifier", "FusedFeatures", "TextEncoder", "build_torch_model"]

#: The token poolings :class:`TextEncoder` computes.
POOLINGS = ("mean", "cls", "max")


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers' progress bars and load chatter are not the user's business here."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        hf_logging.enable_progress_bar()


class TextEncoder(nn.Module):
    """Token ids and attention mask (N, L) int64 -> the pooled (and, as the spec says,
    L2-normalised) embedding (N, D): the text encoder as fitting embedded the texts.  Token
    type ids are not an input: a single text's are all zero, which the encoder assumes."""

    def __init__(self, encoder: nn.Module, spec: TextSpec) -> None:
        super().__init__()
        if spec.pooling not in POOLINGS:
            raise ConfigError(
                f"text pooling '{spec.pooling}' cannot be exported; known: {', '.join(POOLINGS)}"
            )
        self.encoder = encoder
        self.pooling = spec.pooling
        self.normalize = spec.normalize

    @classmethod
    def of(cls, ref: BackboneRef) -> TextEncoder:
        """The encoder of a text backbone ``ref``: its folder's config with its weights file."""
        if ref.text is None or ref.weights_path is None:
            raise ConfigError(f"backbone '{ref.name}' is not a text encoder with weights")
        # lazy: transformers takes seconds to import; only a text export needs it
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel

        with _quiet_transformers():
            config = AutoConfig.from_pretrained(str(ref.text.folder))
            # eager attention traces to plain ops every ONNX runtime has
            encoder = AutoModel.from_config(config, attn_implementation="eager")
            state = load_file(str(ref.weights_path))
            prefix = f"{encoder.base_model_prefix}."
            state = {k.removeprefix(prefix): v for k, v in state.items()}
            missing, _ = encoder.load_state_dict(state, strict=False)
        # position ids and similar buffers may be absent from a checkpoint; weights may not
        lost = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
        if lost:
            raise ConfigError(
                f"{ref.weights_path} lacks {len(lost)} weights of the encoder (e.g. {lost[0]})"
            )
        return cls(encoder.eval(), ref.text)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(N, D) embeddings of the (N, L) padded token ids; padding (mask 0) is ignored."""
        hidden: Tensor = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        elif self.pooling == "max":
            pooled = hidden.masked_fill(mask == 0, -1e9).max(dim=1).values
        else:
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        if self.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2.0, dim=1)
        return pooled


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
        backbone = TextEncoder.of(ref)
    elif ref.is_fused:
        backbone = FusedFeatures([p.build() for p in ref.parts])
    else:
        backbone = ref.build()
    ood = None if contents.ood is None else ood_module(contents.ood)
    preps = [part.preprocessing for part in ref.members]
    return Classifier(backbone, heads, contents.tasks, preps[0], ood, preps).eval()
