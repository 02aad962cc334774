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
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
from headstart.embedding import check_trainable, scan_data
from headstart.errors import ConfigError, DataError, ImageError
from headstart.finetune.augment import eval_transform, resolve, train_transform
from headstart.finetune.data import (
    DecodedImages,
    FinetuneData,
    ImageDataset,
    Imbalance,
    decide_imbalance,
)
from headstart.finetune.evaluation import evaluate_trained, split_targets
from headstart.finetune.module import FinetuneModule
from headstart.finetune.soft import SoftTargets, soft_row
from headstart.finetune.targets import batch_mixer, task_slices
from headstart.finetune.trainer import build_trainer, load_best, read_checkpoint, resolve_precision
from headstart.result import FitResult, write_result
from headstart.runfolder import FinetuneRecord, ResumeRecord, RunFolder

__all__ = [
    "Parts",
    "build_parts",
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


def _imbalance(manifest: Manifest, cfg: FitConfig) -> dict[str, Imbalance]:
    """The remedy of each task: per multi-class task by its class ratio; a balanced sampler
    can balance one task only (the first that asks), so later ones get the weighted loss."""
    out: dict[str, Imbalance] = {}
    sampled = None
    for task in manifest.targets:
        if task.multi_label:
            out[task.name] = Imbalance({}, 1.0, "none", "multi-label: not applied")
            continue
        labels = [s.labels[task.name][0] for s in manifest.split("train")]
        imb = decide_imbalance(
            labels, task.classes, cfg.train.imbalance, cfg.train.imbalance_threshold
        )
        if imb.remedy == "sampler" and sampled is not None:
            why = f"{imb.reason}; the sampler balances '{sampled}', so a weighted loss here"
            imb = Imbalance(imb.counts, imb.ratio, "weighted_loss", why)
        elif imb.remedy == "sampler":
            sampled = task.name
        out[task.name] = imb
    return out


def _class_weights(imbalance: dict[str, Imbalance], manifest: Manifest) -> dict[str, torch.Tensor]:
    out = {}
    for task in manifest.targets:
        imb = imbalance[task.name]
        if imb.remedy == "weighted_loss":
            counts = np.array([max(imb.counts[c], 1) for c in task.classes], dtype=np.float64)
            out[task.name] = torch.tensor(
                counts.sum() / (len(counts) * counts), dtype=torch.float32
            )
    return out


def _balance_on(
    imbalance: dict[str, Imbalance], manifest: Manifest, unlabelled: Sequence[np.ndarray] = ()
) -> list[int] | None:
    """Each training row's class in the task the sampler balances (an unlabelled image of a
    distillation run: the teacher's most probable class)."""
    for task, cols in zip(manifest.targets, task_slices(manifest.targets), strict=True):
        if imbalance[task.name].remedy == "sampler":
            index = {c: i for i, c in enumerate(task.classes)}
            labelled = [index[s.labels[task.name][0]] for s in manifest.split("train")]
            return labelled + [int(np.argmax(row[cols])) for row in unlabelled]
    return None


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
        balance_on=_balance_on(imbalance, manifest, [row for _, row in unlabelled]),
        workers=cfg.train.workers,
    )


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


def _build_backbone(ref: BackboneRef, pretrained: bool, seed: int) -> Backbone:
    if pretrained:
        return ref.build()
    torch.manual_seed(seed)  # the random initialisation is part of the run's seed
    return build_backbone(ref, pretrained=False)


@dataclass
class Parts:
    """Everything a training run needs, built from the manifest and config."""

    manifest: Manifest
    images: DecodedImages
    ref: BackboneRef
    backbone: Backbone
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
) -> Parts:
    """Seed, decode the images, decide the imbalance remedies, build the module and the data.
    ``soft``: a distillation run's teacher rows (and unlabelled images), see
    :mod:`headstart.finetune.soft`.  ``start``: train this already built network (and its
    ref) instead of ``cfg.backbone``'s, e.g. a pruned one (:mod:`headstart.finetune.prune`)."""
    require_one_network(cfg)
    require_float32(cfg)
    seed = cfg.data.seed if cfg.train.seed is None else cfg.train.seed
    seed_everything(seed, workers=True, verbose=False)
    keep_freed_memory()
    pretrained = cfg.backbone.pretrained
    if start is not None:
        ref = start[0]
    elif pretrained:
        ref = resolve_backbone(cfg.backbone.name, cfg.backbone.weights)
    else:
        ref = unweighted_ref(cfg.backbone.name)
    t0 = time.perf_counter()
    manifest, images = prepare_images(manifest, ref, cfg.train.cache_images_mb)
    check_trainable(manifest)
    unlabelled: list[tuple[int, np.ndarray]] = []
    if soft is not None and soft.unlabelled:
        images, unlabelled = _with_unlabelled(images, soft)
    decode_seconds = time.perf_counter() - t0
    backbone = start[1] if start is not None else _build_backbone(ref, pretrained, seed)
    imbalance = _imbalance(manifest, cfg)
    module = FinetuneModule(
        backbone,
        manifest.targets,
        cfg.train,
        seed=seed,
        class_weights=_class_weights(imbalance, manifest),
        mixer=batch_mixer(resolve(cfg.augment)),
        distill=None if soft is None else soft.distill,
    )
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
    return train_parts(build_parts(manifest, cfg), cfg, run, progress=progress, ckpt=ckpt)


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
    weights_file = run.checkpoints / "backbone.safetensors"
    sha = save_weights(parts.backbone, weights_file)
    ref = parts.ref
    tuned = BackboneRef(ref.name, weights_file, sha, ref.preprocessing, parts.backbone.feature_dim)
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
        weights=weights_file,
        validation="the val split (it also picked the best epoch)",
        finetune=record,
        ood=evaluated.ood,
    )


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
    if write and not resume:
        shutil.rmtree(run.checkpoints, ignore_errors=True)  # a killed run's leftovers
        source = manifest.root if isinstance(data, Manifest) else data
        start_record(source, config, run, "finetune")
    result = _train(manifest, config, run, progress=progress, ckpt=ckpt if resume else None)
    if write:
        write_result(result)
        run.mark_finished()
    return result
