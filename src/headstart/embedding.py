"""Scanned data with one embedding per usable image: the primitive every probe, study and the
pipeline start from.

:func:`scan_data` scans with the config's split rules; :func:`embed_data` embeds every usable
image with the configured backbone through the cache (files that fail to decode become problems
of the manifest); :class:`EmbeddedData` keeps the manifest and the features row for row.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from headstart.backbones import BackboneRef, resolve_backbone
from headstart.cache import CacheRoot
from headstart.config import BackboneConfig, FitConfig, load_config
from headstart.data import Manifest, Task, scan
from headstart.errors import ConfigError, DataError
from headstart.features import EmbeddingStore, Extraction, extract
from headstart.features.int8 import quantize_ref

__all__ = [
    "TEXT_DEFAULT",
    "EmbeddedData",
    "check_modality",
    "check_pretrained",
    "check_trainable",
    "embed_data",
    "for_data",
    "scan_data",
]

#: The backbone text data gets when the config names none (the image default stands).
TEXT_DEFAULT = "minilm-l6"
_IMAGE_DEFAULT = BackboneConfig.model_fields["name"].default


@dataclass
class EmbeddedData:
    """A scanned data set with one embedding per usable sample (rows follow manifest.samples)."""

    manifest: Manifest
    features: np.ndarray
    backbone: BackboneRef
    extraction: Extraction

    def rows(self, split: str) -> list[int]:
        """Row indices of one split."""
        return self.manifest.rows(split)

    def cells(self, task: Task, split: str) -> list[tuple[str, ...]]:
        """Each sample's labels of ``task`` in one split."""
        return [tuple(s.labels[task.name]) for s in self.manifest.split(split)]

    def subset(self, rows: list[int], manifest: Manifest) -> EmbeddedData:
        """The data restricted to ``rows`` (of this manifest), with ``manifest`` describing them."""
        return replace(self, manifest=manifest, features=self.features[rows])


def scan_data(data: str | Path, config: FitConfig, *, carve_val: bool = True) -> Manifest:
    """Scan ``data`` with the config's split rules, seed, pixel limit and label column.
    ``carve_val=False``: no val split is carved where the data has none (the probe validates
    by cross-validation; only fine-tuning needs one); the test split is the same either way."""
    d = config.data
    return scan(
        data,
        val_fraction=d.val_fraction if carve_val else 0.0,
        test_fraction=d.test_fraction,
        seed=d.seed,
        max_pixels=d.max_pixels,
        label_column=d.label_column,
        text_column=d.text_column,
    )


def for_data(cfg: FitConfig, manifest: Manifest | None = None) -> FitConfig:
    """``cfg`` with a backbone for the data's modality: text data (``manifest`` is text, or
    the config names a text column) left on the image default backbone gets
    :data:`TEXT_DEFAULT` (with a ``--weights`` folder: that encoder folder); anything else is
    returned as it is (a weights file is an image backbone's)."""
    text = manifest.modality == "text" if manifest is not None else bool(cfg.data.text_column)
    b = cfg.backbone
    image_weights = b.weights is not None and not Path(b.weights).expanduser().is_dir()
    if not text or b.name != _IMAGE_DEFAULT or image_weights:
        return cfg
    return cfg.model_copy(update={"backbone": b.model_copy(update={"name": TEXT_DEFAULT})})


def check_modality(ref: BackboneRef, manifest: Manifest) -> None:
    """A one-line :class:`ConfigError` when the backbone embeds images and the data is text,
    or the other way round."""
    if ref.modality == manifest.modality:
        return
    hint = (
        f"use a text encoder ({TEXT_DEFAULT}, mpnet-base, hf:NAME)"
        if manifest.modality == "text"
        else "use an image backbone (see `headstart backbones`)"
    )
    where = manifest.source or manifest.root
    raise ConfigError(
        f"backbone '{ref.name}' embeds {ref.modality}s but {where} holds "
        f"{manifest.modality}s: {hint}"
    )


def check_trainable(manifest: Manifest) -> None:
    """Every class of every task must keep a training image (after unreadable files and
    deduplication removed some); otherwise a one-line :class:`DataError` names it."""
    for task in manifest.targets:
        counts = Counter(x for s in manifest.split("train") for x in s.labels[task.name])
        empty = [c for c in task.classes if counts[c] == 0]
        if empty:
            where = "" if len(manifest.targets) == 1 else f" of '{task.name}'"
            raise DataError(
                f"class {', '.join(repr(c) for c in empty)}{where} has no usable training "
                "image; add images or remove the class"
            )


def check_pretrained(config: FitConfig) -> None:
    """Embeddings need pretrained weights: a one-line error for ``backbone.pretrained=false``."""
    if not config.backbone.pretrained:
        raise ConfigError(
            "backbone.pretrained=false: a randomly initialised backbone gives meaningless "
            "embeddings; train it from scratch with --strategy finetune"
        )


def embed_data(
    data: str | Path | Manifest,
    config: FitConfig | None = None,
    *,
    progress: bool = True,
    ref: BackboneRef | None = None,
) -> EmbeddedData:
    """Scan ``data`` (unless it is a scanned manifest) and embed every usable image with the
    configured backbone, cached under the config's cache root.  Files that fail to decode
    become problems of the manifest; every class must keep a training image.  With
    ``extract.precision=int8`` the backbone is first quantized to static int8, calibrated on
    the training split (cached), and ``.backbone`` carries the int8 model."""
    cfg = config or load_config()
    check_pretrained(cfg)
    manifest = data if isinstance(data, Manifest) else scan_data(data, cfg)
    cfg = for_data(cfg, manifest)
    ref = ref or resolve_backbone(cfg.backbone.name, cfg.backbone.weights)
    check_modality(ref, manifest)
    store = CacheRoot.for_config(cfg).store
    if manifest.modality == "text":
        return _embed_texts(manifest, cfg, ref, store, progress)
    if cfg.extract.precision == "int8" and ref.precision != "int8":
        # calibrated on the training split only: the test images stay unseen
        ref = quantize_ref(ref, [s.path for s in manifest.split("train")], store)
    extraction = extract(
        [s.path for s in manifest.samples],
        [s.sha256 for s in manifest.samples],
        ref,
        store=store,
        engine=cfg.extract.engine,
        batch_size=cfg.extract.batch_size,
        workers=cfg.extract.workers,
        progress=progress,
    )
    keep = [i for i in range(len(manifest.samples)) if i not in extraction.failures]
    if extraction.failures:
        reasons = {manifest.samples[i].path: r for i, r in extraction.failures.items()}
        manifest = manifest.without(reasons, reasons)
    check_trainable(manifest)
    return EmbeddedData(manifest, extraction.features[keep], ref, extraction)


def _embed_texts(
    manifest: Manifest, cfg: FitConfig, ref: BackboneRef, store: EmbeddingStore, progress: bool
) -> EmbeddedData:
    if cfg.extract.precision == "int8":
        raise ConfigError(
            "extract.precision=int8 quantizes image backbones; text encoders run in float32"
        )
    # the text engine loads tokenizers and ONNX Runtime only when text is embedded
    from headstart.features.text_engine import extract_texts

    extraction = extract_texts(
        manifest.texts,
        [s.sha256 for s in manifest.samples],
        ref,
        store=store,
        batch_size=max(cfg.extract.batch_size, 64),
        progress=progress,
    )
    check_trainable(manifest)
    return EmbeddedData(manifest, extraction.features, ref, extraction)
