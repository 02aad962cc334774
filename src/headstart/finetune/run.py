"""``finetune``: manifest → decoded images → Lightning training → best checkpoint → run folder.

The run folder gets the same files as a probe run (bundle, metrics, manifest, problems,
predictions, config, run.json) plus ``logs/`` (``metrics.csv`` per epoch, Lightning's CSV logs,
TensorBoard when installed), ``checkpoints/`` (``best.ckpt``, ``last.ckpt``) and
``finetune.json`` (recipe facts: imbalance remedy, epochs run, best epoch, precision).
The bundle's backbone is the fine-tuned weights, so its sha256 (and thus every embedding cache
key) differs from the pretrained backbone's.

``backbone.pretrained: false`` trains the same architecture from its seeded random
initialisation (see :func:`scratch_recipe`); ``finetune.json`` then says ``pretrained: false``
and records no pretrained weights hash.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from headstart.allocator import keep_freed_memory
from headstart.backbones import BackboneRef, resolve_backbone, save_weights
from headstart.backbones.model import Backbone, build_backbone
from headstart.backbones.registry import unweighted_ref
from headstart.config import FitConfig
from headstart.data import Manifest
from headstart.data.augment import batch_mixer, eval_transform, resolve, train_transform
from headstart.errors import ConfigError, DataError
from headstart.features import Extraction
from headstart.finetune.data import (
    DecodedImages,
    FinetuneData,
    ImageDataset,
    Imbalance,
    decide_imbalance,
)
from headstart.finetune.evaluation import evaluate_trained, split_targets
from headstart.finetune.module import FinetuneModule
from headstart.finetune.task_module import TaskFinetuneModule
from headstart.finetune.trainer import build_trainer, load_best, resolve_precision
from headstart.fsutil import atomic_write_text
from headstart.pipeline import FitResult, _check_output, _check_trainable
from headstart.runfolder import write_run

__all__ = [
    "FinetuneOutcome",
    "finetune",
    "prepare_images",
    "scratch_recipe",
]

RESUME_FILE = "resume.json"


@dataclass
class FinetuneOutcome:
    """A finished fine-tune before anything is written: the result and its backbone ref."""

    result: FitResult
    ref: BackboneRef
    facts: dict[str, Any] = field(default_factory=dict)


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
    manifest: Manifest, images: DecodedImages, cfg: FitConfig, seed: int, imbalance: Imbalance
) -> FinetuneData:
    plan = resolve(cfg.augment)
    prep = images.prep
    train = ImageDataset(images, *split_targets(manifest, "train"), train_transform(plan, prep))
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
        balanced=imbalance.remedy == "sampler",
        workers=cfg.train.workers,
    )


def _class_weights(imbalance: Imbalance, classes: list[str]) -> torch.Tensor | None:
    if imbalance.remedy != "weighted_loss":
        return None
    counts = np.array([max(imbalance.counts[c], 1) for c in classes], dtype=np.float64)
    weights = counts.sum() / (len(counts) * counts)
    return torch.tensor(weights, dtype=torch.float32)


def load_manifest(data: str | Path, cfg: FitConfig) -> Manifest:
    """Scan ``data`` as ``fit`` does (same split rules and seed)."""
    from headstart.pipeline import scan_data

    return scan_data(data, cfg)


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
    imbalance: Imbalance
    seed: int
    decode_seconds: float


def build_parts(manifest: Manifest, cfg: FitConfig) -> Parts:
    """Seed, decode the images, decide the imbalance remedy, build the module and the data."""
    from lightning.pytorch import seed_everything

    seed = cfg.data.seed if cfg.train.seed is None else cfg.train.seed
    seed_everything(seed, workers=True, verbose=False)
    keep_freed_memory()
    pretrained = cfg.backbone.pretrained
    if pretrained:
        ref = resolve_backbone(cfg.backbone.name, cfg.backbone.weights)
    else:
        ref = unweighted_ref(cfg.backbone.name)
    t0 = time.perf_counter()
    manifest, images = prepare_images(manifest, ref, cfg.train.cache_images_mb)
    _check_trainable(manifest)
    decode_seconds = time.perf_counter() - t0
    backbone = _build_backbone(ref, pretrained, seed)
    module: FinetuneModule
    if manifest.is_plain:
        imbalance = decide_imbalance(
            [s.label for s in manifest.split("train")],
            manifest.classes,
            cfg.train.imbalance,
            cfg.train.imbalance_threshold,
        )
        module = FinetuneModule(
            backbone,
            len(manifest.classes),
            cfg.train,
            seed=seed,
            class_weights=_class_weights(imbalance, manifest.classes),
            mixer=batch_mixer(resolve(cfg.augment), len(manifest.classes)),
        )
    else:
        # per-task remedies and MixUp/CutMix of label sets are not implemented: say so
        imbalance = Imbalance({}, 1.0, "none", "multi-label / multi-task: not applied")
        module = TaskFinetuneModule(backbone, manifest.targets, cfg.train, seed=seed)
    dm = _datamodule(manifest, images, cfg, seed, imbalance)
    return Parts(manifest, images, ref, backbone, module, dm, imbalance, seed, decode_seconds)


def _train(
    manifest: Manifest, cfg: FitConfig, run_dir: Path, *, progress: bool, ckpt: Path | None
) -> FinetuneOutcome:
    parts = build_parts(manifest, cfg)
    manifest, module = parts.manifest, parts.module
    timings: dict[str, float] = {"decode": parts.decode_seconds}
    trainer, checkpoint = build_trainer(cfg.train, run_dir, progress=progress)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=parts.datamodule, ckpt_path=str(ckpt) if ckpt else None)
    timings["train"] = time.perf_counter() - t0
    if not trainer.is_global_zero:
        # DDP's other ranks are done once training is; only rank 0 evaluates and writes.
        raise SystemExit(0)
    best_epoch = load_best(module, checkpoint)
    t0 = time.perf_counter()
    evaluated = evaluate_trained(module, manifest, parts.images, cfg)
    timings["evaluate"] = time.perf_counter() - t0
    weights_file = run_dir / "checkpoints" / "backbone.safetensors"
    sha = save_weights(parts.backbone, weights_file)
    ref = parts.ref
    tuned = BackboneRef(ref.name, weights_file, sha, ref.preprocessing, parts.backbone.feature_dim)
    extraction = Extraction(np.empty((0, 0)), {}, 0, 0, timings["decode"], "finetune")
    result = FitResult(
        run_dir,
        run_dir / "model",
        manifest,
        evaluated.metrics,
        extraction,
        evaluated.head,
        timings,
        cfg,
        evaluated.probabilities,
    )
    result.task_metrics = evaluated.task_metrics
    result.task_probabilities = evaluated.task_probabilities
    imb = parts.imbalance
    facts = {
        "strategy": "finetune" if cfg.backbone.pretrained else "scratch",
        "pretrained": cfg.backbone.pretrained,
        "pretrained_weights_sha256": ref.weights_sha256 or None,
        "finetuned_weights_sha256": sha,
        "imbalance": {
            "counts": imb.counts,
            "ratio": round(imb.ratio, 3),
            "remedy": imb.remedy,
            "reason": imb.reason,
        },
        "epochs_run": len(module.history),
        "best_epoch": best_epoch,
        "precision": resolve_precision(cfg.train),
        "train_images": len(manifest.split("train")),
        "seed": parts.seed,
        "history": module.history,
    }
    return FinetuneOutcome(result, tuned, facts)


def write_outcome(outcome: FinetuneOutcome, extra_facts: dict[str, Any] | None = None) -> None:
    """Write the run folder of a finished fine-tune and mark its resume record finished."""
    result = outcome.result
    write_run(result, outcome.ref)
    facts = {**outcome.facts, **(extra_facts or {})}
    atomic_write_text(result.run_dir / "finetune.json", json.dumps(facts, indent=2) + "\n")
    _mark_resume(result.run_dir, finished=True)


def _mark_resume(run_dir: Path, *, finished: bool, record: dict[str, Any] | None = None) -> None:
    path = run_dir / RESUME_FILE
    current = record or json.loads(path.read_text(encoding="utf-8"))
    current["finished"] = finished
    atomic_write_text(path, json.dumps(current, indent=2) + "\n")


def start_record(data: str | Path, cfg: FitConfig, run_dir: Path, strategy: str) -> None:
    """What ``--resume`` needs before training starts: data path, strategy, resolved config."""
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"data": str(Path(data).resolve()), "strategy": strategy}
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    _mark_resume(run_dir, finished=False, record=record)


def finetune(
    data: str | Path | Manifest,
    config: FitConfig,
    run_dir: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    write: bool = True,
) -> FinetuneOutcome:
    """Fine-tune the configured backbone on ``data`` (a folder, a CSV or a scanned manifest)
    and, with ``write``, write the run folder ``run_dir``.  ``resume`` continues from
    ``run_dir/checkpoints/last.ckpt``.  With ``backbone.pretrained: false`` the backbone
    trains from scratch under :func:`scratch_recipe`."""
    run_dir = Path(run_dir)
    config = scratch_recipe(config)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    if resume and not ckpt.is_file():
        raise ConfigError(f"{run_dir} has no checkpoint to resume from ({ckpt} is missing)")
    if not resume and write:
        _check_output(run_dir, overwrite)
    manifest = data if isinstance(data, Manifest) else load_manifest(data, config)
    if write and not resume:
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # a killed run's leftovers
        source = manifest.root if isinstance(data, Manifest) else data
        start_record(source, config, run_dir, "finetune")
    outcome = _train(manifest, config, run_dir, progress=progress, ckpt=ckpt if resume else None)
    if write:
        write_outcome(outcome)
    return outcome
