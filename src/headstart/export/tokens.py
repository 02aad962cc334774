"""Texts to a text model's graph inputs: the tokenizer written beside an exported text model and
the steps ``model.onnx.json`` records for it.

The exported graph takes ``input_ids`` and ``attention_mask`` (int64, (batch, sequence)).  The
``tokenizer.json`` written beside it is the bundle's own tokenizer with the truncation and
padding the model was fitted with set inside it, so ``Tokenizer.from_file("tokenizer.json")
.encode_batch(texts)`` gives exactly those inputs (each encoding's ``ids`` and
``attention_mask``); the document's ``tokenizer.steps`` say the same, parameter by parameter.
Token type ids are not an input: a single text's are all zero.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from headstart.errors import BundleError, ConfigError
from headstart.fsutil import atomic_write_text

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from headstart.backbones import BackboneRef

__all__ = [
    "INPUT_NAMES",
    "TOKENIZER_FILE",
    "configured_tokenizer",
    "encode",
    "load_tokenizer",
    "model_pad_id",
    "require_encoder",
    "tokenizer_file_for",
    "tokenizer_steps",
    "tokenizer_text",
    "write_tokenizer",
]

TOKENIZER_FILE = "tokenizer.json"
#: The graph inputs of an exported text model, in order.
INPUT_NAMES = ("input_ids", "attention_mask")


def require_encoder(ref: BackboneRef) -> None:
    """A one-line :class:`ConfigError` unless ``ref`` is one text encoder with weights: a fused
    text backbone has several graphs, and a TF-IDF model (``--strategy tfidf``) no network at
    all (its features are the words), so neither becomes this graph."""
    if ref.is_fused:
        raise ConfigError(f"exporting the fused text backbone '{ref.name}' is not supported")
    if ref.text is None or ref.weights_path is None or ref.text.pooling == "words":
        raise ConfigError(
            f"'{ref.name}' has no encoder network to export (a TF-IDF model reads the words "
            "themselves): predict and serve it with the bundle"
        )


def tokenizer_file_for(onnx_path: Path) -> Path:
    """The tokenizer written beside an exported model: ``tokenizer.json`` beside
    ``model.onnx``, ``<stem>.tokenizer.json`` beside any other name (two exports may share a
    folder)."""
    stem = onnx_path.name.removesuffix(".onnx")
    return onnx_path.with_name(TOKENIZER_FILE if stem == "model" else f"{stem}.{TOKENIZER_FILE}")


def model_pad_id(folder: Path) -> int:
    """The id an encoder's padding must use: its config's ``pad_token_id`` (MPNet and RoBERTa
    derive token positions from it), else 0 -- the text engine's rule."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {folder / 'config.json'}: {exc}") from None
    pad = config.get("pad_token_id") if isinstance(config, dict) else None
    return pad if isinstance(pad, int) else 0


def configured_tokenizer(folder: Path, max_length: int) -> Tokenizer:
    """The tokenizer of the encoder in ``folder`` (its ``tokenizer.json``) truncating to
    ``max_length`` tokens (special tokens included, the end cut off) and padding each batch to
    its longest text on the right with the model's pad id (:func:`model_pad_id`)."""
    # lazy: only text models need the tokenizers library
    from tokenizers import Tokenizer

    source = folder / TOKENIZER_FILE
    try:
        tokenizer = Tokenizer.from_file(str(source))
    except Exception as exc:  # a damaged or foreign file: say which, in one line
        raise BundleError(f"{source} is not a readable tokenizer: {exc}") from None
    tokenizer.enable_truncation(max_length, strategy="longest_first", direction="right")
    pad_id = model_pad_id(folder)
    pad_token = tokenizer.id_to_token(pad_id) or "[PAD]"
    tokenizer.enable_padding(direction="right", pad_id=pad_id, pad_token=pad_token)
    return tokenizer


def load_tokenizer(path: Path, sha256: str | None = None) -> Tokenizer:
    """The tokenizer written beside an exported model (its settings are in the file),
    checked against ``sha256`` when given (a :class:`BundleError` when missing or changed)."""
    from tokenizers import Tokenizer

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"the exported model's tokenizer is missing: {path}") from None
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise BundleError(f"{path} is not the tokenizer the model was exported with (sha256)")
    try:
        return Tokenizer.from_str(data.decode("utf-8"))
    except Exception as exc:
        raise BundleError(f"{path} is not a readable tokenizer: {exc}") from None


def tokenizer_text(tokenizer: Tokenizer) -> str:
    """The tokenizer's file as the export writes it (truncation and padding included)."""
    return str(tokenizer.to_str(pretty=True)) + "\n"


def write_tokenizer(tokenizer: Tokenizer, dest: Path) -> str:
    """Write ``tokenizer`` (its truncation and padding included) to ``dest``, atomically;
    its sha256."""
    text = tokenizer_text(tokenizer)
    atomic_write_text(dest, text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def encode(tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, attention_mask) of ``texts``, int64 (N, longest), as the graph takes them."""
    encodings = tokenizer.encode_batch(list(texts))
    ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
    mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
    return ids.reshape(len(texts), -1), mask.reshape(len(texts), -1)


def tokenizer_steps(tokenizer: Tokenizer, file: str) -> list[dict[str, Any]]:
    """Every step from a text to the graph's inputs, each with its parameters and a sentence
    saying the same (as :mod:`headstart.export.recipe` does for images)."""
    truncation = tokenizer.truncation or {}
    padding = tokenizer.padding or {}
    spec = json.loads(tokenizer.to_str())
    kinds = {
        part: (spec.get(part) or {}).get("type")
        for part in ("normalizer", "pre_tokenizer", "model", "post_processor")
    }
    n = truncation.get("max_length")
    return [
        {
            "op": "strip",
            "text": "Strip leading and trailing whitespace (Python's str.strip()); an empty "
            "text is refused, not predicted",
        },
        {
            "op": "tokenize",
            "library": "tokenizers",
            "file": file,
            **{k: v for k, v in kinds.items() if v},
            "text": f"Tokenizer.from_file('{file}').encode_batch(texts): the file's "
            "normalisation, pre-tokenisation, vocabulary and special tokens; the truncation "
            "and padding below are set inside the file",
        },
        {
            "op": "truncate",
            "max_length": n,
            "strategy": truncation.get("strategy"),
            "direction": truncation.get("direction"),
            "text": f"Keep at most {n} tokens, special tokens included (the end of a longer "
            "text is dropped)",
        },
        {
            "op": "pad",
            "to": "longest",
            "pad_id": padding.get("pad_id"),
            "pad_token": padding.get("pad_token"),
            "direction": padding.get("direction"),
            "text": f"Pad every text of a batch to the batch's longest with id "
            f"{padding.get('pad_id')} ({padding.get('pad_token')}) on the right; the attention "
            "mask is 1 for real tokens, 0 for padding (padding changes no output)",
        },
        {
            "op": "feed",
            "inputs": {"input_ids": "encoding.ids", "attention_mask": "encoding.attention_mask"},
            "dtype": "int64",
            "text": "Feed the ids as input_ids and the mask as attention_mask, int64 arrays "
            "(batch, sequence); no token_type_ids (a single text's are all zero)",
        },
    ]
