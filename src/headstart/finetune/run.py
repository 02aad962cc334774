"""``finetune``: manifest → decoded images → Lightning training → best checkpoint → run folder.

The run folder gets the same files as a probe run (bundle, metrics, manifest, problems,
predictions, config, run.json) plus ``logs/`` (``metrics.csv`` per epoch, Lightning's CSV logs,
TensorBoard when installed), ``checkpoints/`` (``best.ckpt``, ``last.ckpt``) and
``finetune.json`` (recipe facts: imbalance remedy per task, epochs run, best epoch, precision).
The bundle's backbone is the fine-tuned weights, so its sha256 (and thus every embedding cache
key) differs from the pretrained backbone's.

``backbone.pretrained: false`` trains the same architecture from its seeded random
initialisation (see :func:`scratch_recipe`); ``finetune.json`` then says ``pretrained: false``
and records no pretrained weights hash.

Text data (``manifest.modality == "text"``) trains a text encoder on the same recipe and loop
(:mod:`headstart.finetune.text`): :func:`data_recipe` picks the text backbone and the text
defaults, the texts are tokenized instead of decoded, and the fine-tuned encoder is written as a
Hugging Face folder, ``checkpoints/encoder/``, which the result's ref points at.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch import seed_everything

from headstart.allocator import keep_freed_memory
from headstart.backbones import BackboneRef, require_single, resolve_backbone
from headstart.backbones.model import Backbone, build_backbone, save_weights
from headstart.backbones.registry import unweighted_ref
from headstart.config import FitConfig
from headstart.data import Manifest
from headstart.embedding import check_modality, check_trainable, for_data, scan_data
from headstart.errors import ConfigError, DataError, ImageError
from headstart.finetune.augment import eval_transform, resolve, train_transform
from headstart.finetune.data import (
    DecodedImages,
    FinetuneData,
    ImageDataset,
    Imbalance,
)
from headstart.finetune.evaluation import evaluate_trained, split_targets
from headstart.finetune.head_init import init_head_from_probe
from headstart.finetune.imbalance import balance_on, class_weights, task_imbalance
from headstart.finetune.module import FinetuneModule
from headstart.finetune.soft import SoftTargets, soft_row
from headstart.finetune.targets import batch_mixer
from headstart.finetune.text import (
    TextEncoder,
    TokenizedTexts,
    build_text_encoder,
    prepare_texts,
    save_text_encoder,
    text_datamodule,
    text_max_length,
    text_recipe,
)
from headstart.finetune.trainer import build_trainer, load_best, read_checkpoint, resolve_precision
from headstart.result import FitResult, write_result
from headstart.runfolder import FinetuneRecord, ResumeRecord, RunFolder

__all__ = [
    "Parts",
    "build_parts",
    "data_recipe",
    "finetune",
    "prepare_images",
    "require_float32",
    "require_one_network",
    "scratch_recipe",
    "start_record",
    "train_parts",
]


def require_one_network(cfg: FitConfig, what: str = "fine-tuning") -> None:
    """A one-line ``BackboneError`` when the configured backbone is a fusion (``-b a+b``):
    ``what`` trains one network."""
    require_single(
        cfg.backbone.name,
        what,
        "fine-tune one of its parts, or fit a probe on the fused features (--strategy probe)",
    )


def require_float32(cfg: FitConfig) -> None:
    """A one-line ``ConfigError`` when the config asks for int8 embeddings: training runs in
    float32, and an int8 copy of a trained network is made afterwards."""
    if cfg.extract.precision == "int8":
        raise ConfigError(
            "extract.precision=int8 applies to a probe's embeddings; fine-tuning trains in "
            "float32: compress the fine-tuned model with headstart compress MODEL DATA "
            "--methods int8"
        )


def prepare_images(
    manifest: Manifest, ref: BackboneRef, budget_mb: int
) -> tuple[Manifest, DecodedImages]:
    """Decode every image once (kept in memory up to ``budget_mb``); unreadable files become
    problems of the returned manifest, whose samples line up with the returned images."""
    images = DecodedImages([s.path for s in manifest.samples], ref.preprocessing, budget_mb)
    failures = images.check_all()
    if not failures:
        return manifest, images
    reasons = {manifest.samples[i].path: r for i, r in failures.items()}
    manifest = manifest.without(reasons, reasons)
    kept = DecodedImages([s.path for s in manifest.samples], ref.preprocessing, budget_mb)
    kept._cache = {
        j: images._cache[i]
        for j, i in enumerate(i for i in range(len(images)) if i not in failures)
        if i in images._cache
    }
    return manifest, kept


def _datamodule(
    manifest: Manifest,
    images: DecodedImages,
    cfg: FitConfig,
    seed: int,
    imbalance: dict[str, Imbalance],
    soft: SoftTargets | None = None,
    unlabelled: Sequence[tuple[int, np.ndarray]] = (),
) -> FinetuneData:
    plan = resolve(cfg.augment)
    prep = images.prep
    rows, targets = split_targets(manifest, "train")
    rows_soft = None
    if soft is not None:
        # the teacher's row beside each target row; unlabelled images: no target (zeros)
        rows_soft = [soft_row(soft.rows[manifest.samples[i].sha256], True) for i in rows]
        width = sum(len(t.classes) for t in manifest.targets)
        for index, row in unlabelled:
            rows.append(index)
            targets.append(torch.zeros(width))
            rows_soft.append(soft_row(row, False))
    train = ImageDataset(images, rows, targets, train_transform(plan, prep), rows_soft)
    val_rows, val_targets = split_targets(manifest, "val")
    if not val_rows:
        raise DataError(
            "fine-tuning needs a validation split (early stopping, best checkpoint): add a "
            "val/ folder or set data.val_fraction > 0"
        )
    val = ImageDataset(images, val_rows, val_targets, eval_transform(prep))
    return FinetuneData(
        train,
        val,
        batch_size=cfg.train.batch_size,
        seed=seed,
        balance_on=balance_on(imbalance, manifest, [row for _, row in unlabelled]),
        workers=cfg.train.workers,
    )


def data_recipe(cfg: FitConfig, manifest: Manifest) -> FitConfig:
    """``cfg`` for the data's modality: text data gets the text backbone when the config
    names none (:func:`~headstart.embedding.for_data`) and the recipe's text defaults where
    the config sets nothing (:func:`~headstart.finetune.text.text_recipe`); image data keeps
    ``cfg``.  Apply it before the config is written, so ``--resume`` reads what trained."""
    if manifest.modality != "text":
        return cfg
    return text_recipe(for_data(cfg, manifest))


def scratch_recipe(cfg: FitConfig) -> FitConfig:
    """``cfg`` itself when the backbone is pretrained; else the recipe for training from
    scratch: every block trains from epoch 0 at the head's rate (no frozen epochs, no frozen
    blocks, ``backbone_lr_ratio`` 1, no layer decay), because freezing or damping randomly
    initialised layers only slows them down."""
    if cfg.backbone.pretrained:
        return cfg
    if cfg.backbone.weights is not None:
        raise ConfigError(
            f"backbone.weights ({cfg.backbone.weights}) and backbone.pretrained=false contradict "
            "each other: drop one of them"
        )
    train = cfg.train.model_copy(
        update={
            "frozen_epochs": 0,
            "unfreeze_last": None,
            "backbone_lr_ratio": 1.0,
            "layer_decay": 1.0,
        }
    )
    return cfg.model_copy(update={"train": train})


def _build_backbone(ref: BackboneRef, pretrained: bool, seed: int) -> Backbone | TextEncoder:
    if not pretrained:
        torch.manual_seed(seed)  # the random initialisation is part of the run's seed
    if ref.modality == "text":
        return build_text_encoder(ref, pretrained=pretrained)
    return ref.build() if pretrained else build_backbone(ref, pretrained=False)


@dataclass
class Parts:
    """Everything a training run needs, built from the manifest and config."""

    manifest: Manifest
    images: DecodedImages | TokenizedTexts
    ref: BackboneRef
    backbone: Backbone | TextEncoder
    module: FinetuneModule
    datamodule: FinetuneData
    imbalance: dict[str, Imbalance]
    seed: int
    decode_seconds: float
    unlabelled: int = 0
    """Distillation: the unlabelled images decoded and trained on."""


def _with_unlabelled(
    images: DecodedImages, soft: SoftTargets
) -> tuple[DecodedImages, list[tuple[int, np.ndarray]]]:
    """The manifest's images followed by the unlabelled ones, and (index, teacher row) of each
    unlabelled image that decodes (one that does not is left out)."""
    joined = images.extended([path for path, _ in soft.unlabelled])
    kept = []
    for j, (_, row) in enumerate(soft.unlabelled):
        try:
            joined[len(images) + j]
        except ImageError:
            continue
        kept.append((len(images) + j, row))
    return joined, kept


def build_parts(
    manifest: Manifest,
    cfg: FitConfig,
    soft: SoftTargets | None = None,
    *,
    start: tuple[BackboneRef, Backbone] | None = None,
    head_from_probe: bool = True,
) -> Parts:
    """Seed, decode the images, decide the imbalance remedies, build the module and the data.
    ``soft``: a distillation run's teacher rows (and unlabelled images), see
    :mod:`headstart.finetune.soft`.  ``start``: train this already built network (and its
    ref) instead of ``cfg.backbone``'s, e.g. a pruned one (:mod:`headstart.finetune.prune`).
    Text data trains ``cfg``'s text encoder on the tokenized texts (pass a config through
    :func:`data_recipe` first), its head starting as the probe's unless ``head_from_probe`` is
    false (:mod:`headstart.finetune.head_init`; a resumed run's checkpoint holds its head);
    distillation and pruning take images only."""
    require_one_network(cfg)
    require_float32(cfg)
    text = manifest.modality == "text"
    if text and (soft is not None or start is not None):
        raise ConfigError(
            "distillation and pruning train image backbones; fine-tune a text encoder with "
            "--strategy finetune"
        )
    seed = cfg.data.seed if cfg.train.seed is None else cfg.train.seed
    seed_everything(seed, workers=True, verbose=False)
    keep_freed_memory()
    pretrained = cfg.backbone.pretrained
    if start is not None:
        ref = start[0]
    elif pretrained:
        ref = resolve_backbone(cfg.backbone.name, cfg.backbone.weights)
    elif text:  # an encoder from scratch still reads its folder's config and tokenizer
        resolved = resolve_backbone(cfg.backbone.name, cfg.backbone.weights)
        ref = replace(resolved, weights_path=None, weights_sha256="")
    else:
        ref = unweighted_ref(cfg.backbone.name)
    check_modality(ref, manifest)
    t0 = time.perf_counter()
    unlabelled: list[tuple[int, np.ndarray]] = []
    images: DecodedImages | TokenizedTexts
    if text:
        images = prepare_texts(manifest, ref, text_max_length(cfg, ref))
    else:
        manifest, images = prepare_images(manifest, ref, cfg.train.cache_images_mb)
        if soft is not None and soft.unlabelled:
            images, unlabelled = _with_unlabelled(images, soft)
    check_trainable(manifest)
    decode_seconds = time.perf_counter() - t0
    backbone = start[1] if start is not None else _build_backbone(ref, pretrained, seed)
    imbalance = task_imbalance(manifest, cfg)
    module = FinetuneModule(
        backbone,
        manifest.targets,
        cfg.train,
        seed=seed,
        class_weights=class_weights(imbalance, manifest),
        mixer=None if text else batch_mixer(resolve(cfg.augment)),
        distill=None if soft is None else soft.distill,
    )
    if isinstance(images, TokenizedTexts):
        if head_from_probe and pretrained:
            init_head_from_probe(module, manifest, ref, cfg)
        rows, targets = split_targets(manifest, "train")
        balance = balance_on(imbalance, manifest)
        dm = text_datamodule(images, rows, targets, split_targets(manifest, "val"), cfg, balance)
    else:
        dm = _datamodule(manifest, images, cfg, seed, imbalance, soft, unlabelled)
    return Parts(
        manifest,
        images,
        ref,
        backbone,
        module,
        dm,
        imbalance,
        seed,
        decode_seconds,
        len(unlabelled),
    )


def _train(
    manifest: Manifest, cfg: FitConfig, run: RunFolder, *, progress: bool, ckpt: Path | None
) -> FitResult:
    parts = build_parts(manifest, cfg, head_from_probe=ckpt is None)
    return train_parts(parts, cfg, run, progress=progress, ckpt=ckpt)


def train_parts(
    parts: Parts, cfg: FitConfig, run: RunFolder, *, progress: bool, ckpt: Path | None
) -> FitResult:
    """Train built parts (continuing from ``ckpt``), load the best epoch, evaluate on val and
    test: the fine-tuned model's :class:`FitResult`, not yet written."""
    manifest, module = parts.manifest, parts.module
    timings: dict[str, float] = {"decode": parts.decode_seconds}
    trainer, checkpoint = build_trainer(cfg.train, run.path, progress=progress)
    t0 = time.perf_counter()
    trainer.fit(
        module,
        datamodule=parts.datamodule,
        ckpt_path=str(ckpt) if ckpt else None,
        weights_only=True,  # checked by read_checkpoint; never unpickle code
    )
    timings["train"] = time.perf_counter() - t0
    if not trainer.is_global_zero:
        # DDP's other ranks are done once training is; only rank 0 evaluates and writes.
        raise SystemExit(0)
    best_epoch = load_best(module, checkpoint)
    t0 = time.perf_counter()
    evaluated = evaluate_trained(module, manifest, parts.images, cfg)
    timings["evaluate"] = time.perf_counter() - t0
    ref = parts.ref
    tuned = _save_network(parts, run)
    sha = tuned.weights_sha256
    record = FinetuneRecord(
        strategy="finetune" if cfg.backbone.pretrained else "scratch",
        pretrained=cfg.backbone.pretrained,
        pretrained_weights_sha256=ref.weights_sha256 or None,
        finetuned_weights_sha256=sha,
        imbalance={
            name: {
                "counts": imb.counts,
                "ratio": round(imb.ratio, 3),
                "remedy": imb.remedy,
                "reason": imb.reason,
            }
            for name, imb in parts.imbalance.items()
        },
        epochs_run=len(module.history),
        best_epoch=best_epoch,
        precision=resolve_precision(cfg.train),
        train_images=len(manifest.split("train")),
        seed=parts.seed,
        history=module.history,
    )
    return FitResult(
        run.path,
        manifest,
        evaluated.heads,
        tuned,
        cfg,
        metrics=evaluated.metrics,
        probabilities=evaluated.probabilities,
        trained_on=len(manifest.split("train")),
        timings=timings,
        weights=tuned.weights_path,
        validation="the val split (it also picked the best epoch)",
        finetune=record,
        ood=evaluated.ood,
    )


def _save_network(parts: Parts, run: RunFolder) -> BackboneRef:
    """Write the trained network into the run's checkpoints folder: the ref of the weights
    (an image backbone's file; a text encoder's folder, ``encoder/``)."""
    ref, backbone = parts.ref, parts.backbone
    if isinstance(backbone, TextEncoder) and isinstance(parts.images, TokenizedTexts):
        length = parts.images.max_length
        return save_text_encoder(backbone, ref, run.checkpoints / "encoder", length)
    if isinstance(backbone, TextEncoder):
        raise TypeError("a text encoder trained on images")  # build_parts never builds one
    path = run.checkpoints / "backbone.safetensors"
    sha = save_weights(backbone, path)
    return BackboneRef(ref.name, path, sha, ref.preprocessing, backbone.feature_dim)


def start_record(data: str | Path, cfg: FitConfig, run: RunFolder, strategy: str) -> None:
    """What ``--resume`` needs before training starts: data path, strategy, resolved config."""
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)
    run.write_resume(ResumeRecord(str(Path(data).resolve()), strategy, finished=False))


def finetune(
    data: str | Path | Manifest,
    config: FitConfig,
    run_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    write: bool = True,
) -> FitResult:
    """Fine-tune the configured backbone on ``data`` (a folder, a CSV or a scanned manifest)
    and, with ``write``, write the run folder ``run_dir``.  ``resume`` continues from
    ``run_dir/checkpoints/last.ckpt``.  With ``backbone.pretrained: false`` the backbone
    trains from scratch under :func:`scratch_recipe`.  A fused backbone (``a+b``) is refused
    before anything is read or written: there is no one network to train."""
    require_one_network(config)
    require_float32(config)
    run = RunFolder(run_dir)
    config = scratch_recipe(config)
    ckpt = run.checkpoints / "last.ckpt"
    if resume and not ckpt.is_file():
        raise ConfigError(f"{run.path} has no checkpoint to resume from ({ckpt} is missing)")
    if resume:
        read_checkpoint(ckpt)  # a damaged or code-carrying checkpoint: one line, before training
    if not resume and write:
        run.check_output(overwrite)
    manifest = data if isinstance(data, Manifest) else scan_data(data, config)
    config = data_recipe(config, manifest)
    if write and not resume:
        shutil.rmtree(run.checkpoints, ignore_errors=True)  # a killed run's leftovers
        source = manifest.root if isinstance(data, Manifest) else data
        start_record(source, config, run, "finetune")
    result = _train(manifest, config, run, progress=progress, ckpt=ckpt if resume else None)
    if write:
        write_result(result)
        run.mark_finished()
    return result
