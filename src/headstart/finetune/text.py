"""Fine-tuning a text encoder on the image recipe: the torch module, tokenized batches, the
text defaults of the recipe and the fine-tuned encoder's folder.

The module is the Hugging Face encoder of the ref's folder followed by the pooling of its
:class:`~headstart.backbones.TextSpec` (mean over the attention mask, or the first token) and L2
normalisation: :mod:`headstart.backbones.text_model`, the very code that computed the probe's
frozen features, so the first epoch starts where the probe is.  Its input is one int64 tensor
(N, 2, L): token ids and attention mask stacked, so the recipe's loop (which moves, counts and
splits one input tensor) runs unchanged.  Texts are tokenized once with the ``tokenizers``
library (``tokenizer.json``; truncated at ``train.max_length``, default the spec's) and padded
per batch to the batch's longest text; training batches are drawn in length buckets
(:class:`~headstart.finetune.data.EpochSampler`), so little of each batch is padding (banking77:
18 tokens a sentence instead of 46, 1.6x the sentences per second).  The head starts as the
probe's (:mod:`headstart.finetune.head_init`).

The fine-tuned encoder is written as a Hugging Face folder, ``RUN/checkpoints/encoder/``
(``model.safetensors`` and ``config.json`` by ``save_pretrained``, the tokenizer and
sentence-transformers files copied, ``sentence_bert_config.json`` with the length it trained
at), and the result's ref is that folder's as ``-b NAME --weights FOLDER`` resolves it: its
weights digest differs from the pretrained encoder's, so no embedding cache entry of one is
ever read for the other.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from headstart.backbones.spec import BackboneRef, TextSpec
from headstart.backbones.text import text_ref
from headstart.backbones.text_model import (
    PooledTextEncoder,
    embed,
    load_text_encoder,
    quiet_transformers,
)
from headstart.config import AugmentConfig, FitConfig
from headstart.data import Manifest
from headstart.errors import BackboneError, DataError
from headstart.finetune.data import FinetuneData

__all__ = [
    "TEXT_RECIPE",
    "PadCollate",
    "TextDataset",
    "TextEncoder",
    "TokenizedTexts",
    "build_text_encoder",
    "prepare_texts",
    "save_text_encoder",
    "text_datamodule",
    "text_max_length",
    "text_recipe",
]

log = logging.getLogger("headstart")

#: The recipe's defaults for text encoders, where the config leaves a field at its (image)
#: default.  BERT-style fine-tuning: AdamW at 5e-5 on the top layer, 0.9 layer-wise decay below,
#: the head (which starts as the probe's, :mod:`headstart.finetune.head_init`) at 1e-3, no
#: head-only epoch, a short warm-up, little weight decay and dropout (the encoder has its own),
#: three epochs.  Measured with minilm-l6 on banking77 (3 epochs, test accuracy on 1000 test
#: sentences): 10 per class: the image rates from a random head 56% validation after two
#: epochs, a random head at 1e-2 / 2e-2 75% / 81% (on 500), the probe's head 86% (probe 87%);
#: 20 per class: 89.1% with 5e-5 on the top layer, 88.8% with 1e-4 (the probe: 90.1%).
TEXT_RECIPE: dict[str, Any] = {
    "epochs": 3,
    "frozen_epochs": 0,
    "lr": 1e-3,
    "backbone_lr_ratio": 0.05,
    "layer_decay": 0.9,
    "weight_decay": 0.01,
    "dropout": 0.1,
    "warmup_epochs": 0.3,
}

#: Files of an encoder folder copied beside the fine-tuned weights: the tokenizer's and the
#: sentence-transformers module description (so the folder loads there too).
_COPIED = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "sentencepiece.bpe.model",
    "spm.model",
    "added_tokens.json",
    "modules.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)
#: Holds the sequence length the folder's ref gets (:func:`~headstart.backbones.text.text_ref`).
_LENGTH_FILE = "sentence_bert_config.json"


def text_recipe(cfg: FitConfig) -> FitConfig:
    """``cfg`` with the text defaults (:data:`TEXT_RECIPE`) in every ``train`` field the
    config did not set; logs one line when ``augment`` is set (text gets no augmentation)."""
    if cfg.augment != AugmentConfig():
        log.warning("augment.* applies to images: text fine-tuning uses no augmentation")
    given = cfg.train.model_fields_set
    update = {k: v for k, v in TEXT_RECIPE.items() if k not in given}
    if not update:
        return cfg
    return cfg.model_copy(update={"train": cfg.train.model_copy(update=update)})


def _spec(ref: BackboneRef) -> TextSpec:
    """The ref's :class:`TextSpec`; a one-line ``BackboneError`` for an image backbone."""
    if ref.text is None:
        raise BackboneError(f"backbone '{ref.name}' is not a text encoder")
    return ref.text


def text_max_length(cfg: FitConfig, ref: BackboneRef) -> int:
    """Tokens kept per text: ``train.max_length`` when set, else the encoder's own."""
    return cfg.train.max_length or _spec(ref).max_length


class TextEncoder(nn.Module):
    """The shared :class:`~headstart.backbones.text_model.PooledTextEncoder` as the recipe's
    loop wants a backbone: ``forward(x)`` with ``x`` (N, 2, L) int64 (token ids, attention
    mask) gives (N, feature_dim) embeddings, and the Hugging Face encoder is ``.model`` (its
    parameters keep their ``model.`` names), as an image :class:`Backbone`'s network is."""

    library = "transformers"

    def __init__(self, name: str, encoder: PooledTextEncoder, weights_sha256: str) -> None:
        super().__init__()
        self.name = name
        self.model = encoder.model
        self.spec = encoder.spec
        self.weights_sha256 = weights_sha256
        self.feature_dim = encoder.feature_dim
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        """Pooled (and normalised, as the spec says) embeddings (N, feature_dim)."""
        return embed(self.model, self.spec, x[:, 0], x[:, 1])


def build_text_encoder(ref: BackboneRef, *, pretrained: bool = True) -> TextEncoder:
    """The encoder of a text ref, in float32 and eval mode: its folder's weights (checked
    against the ref's digest), or with ``pretrained=False`` its architecture's seeded random
    initialisation (``config.json`` only)."""
    encoder = load_text_encoder(ref, pretrained=pretrained)
    return TextEncoder(ref.name, encoder, ref.weights_sha256 if pretrained else "")


class TokenizedTexts:
    """Every sample's token ids (tokenized once, truncated at ``max_length``, no padding);
    :meth:`batch` pads some of them to their longest into the encoder's (N, 2, L) input."""

    def __init__(self, texts: Sequence[str], folder: Path, max_length: int) -> None:
        # lazy: the tokenizers library loads only when text is tokenized
        from tokenizers import Tokenizer

        path = Path(folder) / "tokenizer.json"
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # any failure means the file is unusable
            raise BackboneError(f"cannot read tokenizer {path}: {exc}") from None
        padding = tokenizer.padding or {}
        self.pad_id = int(padding.get("pad_id", 0))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        self.ids = [
            torch.tensor(e.ids, dtype=torch.int64) for e in tokenizer.encode_batch(list(texts))
        ]
        self.collate = PadCollate(self.pad_id)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> list[int]:
        """Tokens per text (special tokens included)."""
        return [len(i) for i in self.ids]

    def batch(self, rows: Sequence[int]) -> Tensor:
        """The encoder input of ``rows``, padded to their longest."""
        return pad_ids([self.ids[i] for i in rows], self.pad_id)

    def eval_order(self, rows: Sequence[int]) -> list[int]:
        """``rows`` by length, so evaluation batches hold texts of alike length."""
        return sorted(rows, key=lambda i: len(self.ids[i]))

    def eval_batch(self, rows: Sequence[int]) -> Tensor:
        """The encoder input of ``rows`` (evaluation: the same as training's)."""
        return self.batch(rows)


def pad_ids(ids: Sequence[Tensor], pad_id: int) -> Tensor:
    """(N, 2, longest) int64: the ids right-padded with ``pad_id``, and the attention mask."""
    longest = max(len(i) for i in ids)
    out = torch.full((len(ids), 2, longest), pad_id, dtype=torch.int64)
    out[:, 1] = 0
    for row, seq in enumerate(ids):
        out[row, 0, : len(seq)] = seq
        out[row, 1, : len(seq)] = 1
    return out


class PadCollate:
    """A DataLoader ``collate_fn``: (ids, target row[, soft row]) items → (input, targets...)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[tuple[Tensor, ...]]) -> tuple[Tensor, ...]:
        columns = list(zip(*items, strict=True))
        x = pad_ids(columns[0], self.pad_id)
        return (x, *(torch.stack(list(c)) for c in columns[1:]))


class TextDataset(Dataset[tuple[Tensor, ...]]):
    """(token ids, target row) pairs over some rows of a :class:`TokenizedTexts`; keys may be
    (index, seed) pairs from :class:`~headstart.finetune.data.EpochSampler` (the seed is
    unused: text has no random transform)."""

    def __init__(self, texts: TokenizedTexts, rows: Sequence[int], targets: Sequence[Tensor]):
        self.texts = texts
        self.rows = list(rows)
        self.targets = list(targets)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> list[int]:
        """Tokens of each item (for length-bucketed batches)."""
        return [len(self.texts.ids[r]) for r in self.rows]

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, ...]:
        index = key[0] if isinstance(key, tuple) else key
        return self.texts.ids[self.rows[index]], self.targets[index]


def text_datamodule(
    texts: TokenizedTexts,
    rows: Sequence[int],
    targets: Sequence[Tensor],
    val: tuple[Sequence[int], Sequence[Tensor]],
    cfg: FitConfig,
    balance_on: Sequence[int] | None,
) -> FinetuneData:
    """Train / val loaders over the tokenized texts: dynamic padding, length-bucketed
    training batches, the recipe's seeded (and, when asked, class-balanced) order."""
    if not val[0]:
        raise DataError(
            "fine-tuning needs a validation split (early stopping, best checkpoint): add a "
            "split column or set data.val_fraction > 0"
        )
    train = TextDataset(texts, rows, targets)
    seed = cfg.data.seed if cfg.train.seed is None else cfg.train.seed
    return FinetuneData(
        train,
        TextDataset(texts, val[0], val[1]),
        batch_size=cfg.train.batch_size,
        seed=seed,
        balance_on=balance_on,
        workers=cfg.train.workers,
        collate=texts.collate,
        lengths=train.lengths,
    )


def prepare_texts(manifest: Manifest, ref: BackboneRef, max_length: int) -> TokenizedTexts:
    """Every sample's text tokenized for ``ref``'s encoder (the scan left out unusable texts)."""
    return TokenizedTexts(manifest.texts, _spec(ref).folder, max_length)


def save_text_encoder(
    encoder: TextEncoder, ref: BackboneRef, folder: Path, max_length: int
) -> BackboneRef:
    """Write ``encoder`` as a Hugging Face folder at ``folder`` (replacing one there; built
    aside and renamed in) with ``ref``'s tokenizer files, and return the ref of the
    fine-tuned encoder: weights and folder there, ``max_length`` the one it was trained at."""
    spec = _spec(ref)
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        model: Any = encoder.model
        with quiet_transformers():
            model.save_pretrained(tmp)
        for name in (*_COPIED, *_module_configs(Path(spec.folder))):
            source = Path(spec.folder) / name
            if source.is_file():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, tmp / name)
        _write_length(Path(spec.folder) / _LENGTH_FILE, tmp / _LENGTH_FILE, max_length)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    # the folder's ref as --weights FOLDER (or a bundle) will resolve it: it must say what
    # trained, or embeddings of it would not be the trained network's
    tuned = text_ref(ref.name, folder)
    expected = replace(spec, folder=folder, max_length=max_length)
    if tuned.text != expected:
        raise BackboneError(
            f"the fine-tuned encoder in {folder} resolves to {tuned.text}, not the {expected} "
            "it was trained as"
        )
    return tuned


def _module_configs(folder: Path) -> list[str]:
    """The config files of the sentence-transformers modules ``modules.json`` lists (its
    pooling's among them), relative to ``folder``."""
    path = folder / "modules.json"
    if not path.is_file():
        return []
    modules = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(modules, list):
        return []
    paths = [str(m.get("path", "")) for m in modules if isinstance(m, dict)]
    inside = [p for p in paths if p and not Path(p).is_absolute() and ".." not in Path(p).parts]
    return [f"{p}/config.json" for p in inside]


def _write_length(source: Path, target: Path, max_length: int) -> None:
    """sentence-transformers' config (``source``'s, if any) with ``max_seq_length`` set."""
    settings: dict[str, Any] = {}
    if source.is_file():
        loaded = json.loads(source.read_text(encoding="utf-8"))
        settings = loaded if isinstance(loaded, dict) else {}
    settings["max_seq_length"] = max_length
    target.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
