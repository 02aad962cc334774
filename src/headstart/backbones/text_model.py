"""The text encoder as a torch module (imports torch; transformers only when one is loaded): a
Hugging Face encoder followed by the pooling and L2 normalisation its
:class:`~headstart.backbones.spec.TextSpec` records, i.e. the sentence-transformers embedding.

One definition serves everything that runs the network (the text engine's torch engine and the
ONNX export it runs on ONNX Runtime, a bundle's ONNX export, fine-tuning), so none of them can
pool, normalise or load differently from the others: the embeddings a head was fitted on are
the ones every later step computes.

Every text encoder keeps its weights as ``model.safetensors`` in its folder (a built-in's, an
``hf:`` snapshot, a fine-tuned run's ``checkpoints/encoder/``, a bundle's ``encoder/``; see
:func:`~headstart.backbones.text.text_ref`), so one loader serves them all: that file's digest
is checked against the ref's, then transformers loads the folder (``from_pretrained``, which
also maps the key prefixes of checkpoints saved from a task model).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import Tensor, nn

from headstart.backbones.spec import BackboneRef, TextSpec, file_sha256
from headstart.errors import BackboneError, WeightsError

__all__ = ["PooledTextEncoder", "embed", "load_text_encoder", "quiet_transformers"]

#: The token poolings computed here (sentence-transformers' mean over the real tokens, or the
#: first token); :func:`~headstart.backbones.text.text_ref` reads no other from a folder.
_POOLINGS = ("mean", "cls")
#: The weights file inside a text encoder's folder.
_WEIGHTS_FILE = "model.safetensors"
#: Parameters a checkpoint may lack: buffers transformers rebuilds, and the pooler (a dense
#: layer on the first token that neither pooling reads).
_NOT_READ = ("position_ids", "token_type_ids")
_UNUSED_MODULE = "pooler."


def _require_pooling(spec: TextSpec) -> None:
    if spec.pooling not in _POOLINGS:
        raise BackboneError(
            f"text pooling '{spec.pooling}' is not supported; supported: {', '.join(_POOLINGS)}"
        )


def embed(model: nn.Module, spec: TextSpec, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """(N, D) embeddings of (N, L) padded token ids by the Hugging Face encoder ``model``:
    pooled as ``spec`` says (padding, mask 0, is ignored) and L2-normalised when it says so.
    Token type ids are not an input: a single text's are all zero, which the encoder assumes."""
    hidden: Tensor = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    if spec.pooling == "cls":
        pooled = hidden[:, 0]
    else:  # sentence-transformers' mean over the real tokens
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, p=2.0, dim=1) if spec.normalize else pooled


class PooledTextEncoder(nn.Module):
    """Token ids and attention mask (N, L) int64 -> the text's embedding (N, feature_dim), as
    :func:`embed` computes it.  ``model`` is the Hugging Face encoder (its layers are what
    fine-tuning's layer-wise learning rates walk)."""

    def __init__(self, model: nn.Module, spec: TextSpec) -> None:
        super().__init__()
        _require_pooling(spec)
        self.model = model
        self.spec = spec
        config: Any = model.config
        self.feature_dim = int(config.hidden_size)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(N, feature_dim) embeddings of the (N, L) padded token ids."""
        return embed(self.model, self.spec, input_ids, attention_mask)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No Hugging Face progress bars ("Loading weights", "Writing model shards") or load
    chatter: the caller reports its own progress, and :func:`load_text_encoder` its own
    errors.  The previous verbosity and bar setting come back afterwards."""
    # lazy: transformers takes seconds to import; only loading or saving an encoder needs it
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bar:
            hf_logging.enable_progress_bar()


def load_text_encoder(
    ref: BackboneRef,
    *,
    pretrained: bool = True,
    attention: Literal["eager", "sdpa"] | None = None,
) -> PooledTextEncoder:
    """The encoder of text backbone ``ref`` in float32 and eval mode: its folder's
    ``model.safetensors`` (its sha256 must be the ref's, else ``WeightsError``; a weight the
    embedding reads missing there is one too), or with ``pretrained=False`` its architecture's
    random initialisation (``config.json`` only; seed torch first for a reproducible one).

    ``attention``: transformers' ``attn_implementation``: "eager" traces to plain MatMul and
    Softmax ops every ONNX runtime runs (an "sdpa" export ran slower under ONNX Runtime),
    "sdpa" is torch's fastest, None the library's default.  A folder transformers cannot load
    is a one-line ``BackboneError``."""
    if ref.text is None:
        raise BackboneError(f"backbone '{ref.name}' is not a text encoder")
    spec = ref.text
    _require_pooling(spec)
    try:
        with quiet_transformers():
            if pretrained:
                model = _pretrained(ref, spec, attention)
            else:
                model = _initialised(spec, attention)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(f"cannot load text encoder from {spec.folder}: {first}") from None
    return PooledTextEncoder(model, spec).eval()


def _initialised(spec: TextSpec, attention: str | None) -> nn.Module:
    """The folder's architecture (``config.json``), randomly initialised."""
    # lazy: transformers takes seconds to import; only running an encoder in torch needs it
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(spec.folder, local_files_only=True)
    return AutoModel.from_config(config, attn_implementation=attention)


def _pretrained(ref: BackboneRef, spec: TextSpec, attention: str | None) -> nn.Module:
    """The folder's encoder with its weights, which must be the ref's and hold every weight
    the embedding reads."""
    from transformers import AutoModel

    weights = spec.folder / _WEIGHTS_FILE
    if file_sha256(weights) != ref.weights_sha256:
        raise WeightsError(
            f"{weights} changed since backbone '{ref.name}' was resolved (sha256 differs); "
            "resolve it again"
        )
    model, loading = AutoModel.from_pretrained(
        spec.folder,
        local_files_only=True,
        use_safetensors=True,
        dtype=torch.float32,
        attn_implementation=attention,
        output_loading_info=True,
    )
    lost = sorted(
        k
        for k in loading["missing_keys"]
        if not k.endswith(_NOT_READ) and not k.startswith(_UNUSED_MODULE)
    )
    if lost:
        raise WeightsError(f"{weights} lacks {len(lost)} weights of the encoder (e.g. {lost[0]})")
    return model
