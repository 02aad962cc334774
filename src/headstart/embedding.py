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
from headstart.config import FitConfig, load_config
from headstart.data import Manifest, Task, scan
from headstart.errors import ConfigError, DataError
from headstart.features import Extraction, extract
from headstart.features.int8 import quantize_ref

__all__ = ["EmbeddedData", "check_pretrained", "check_trainable", "embed_data", "scan_data"]


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
    ref = ref or resolve_backbone(cfg.backbone.name, cfg.backbone.weights)
    manifest = data if isinstance(data, Manifest) else scan_data(data, cfg)
    store = CacheRoot.for_config(cfg).store
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
