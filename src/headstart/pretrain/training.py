"""The torch side of ``pretrain``: decode the images, build the split network and the
Lightning run (the fine-tuning trainer: devices, DDP, precision, atomic ``last.ckpt``), train,
and hand back the adapted backbone."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from lightning.pytorch import seed_everything
from torch.utils.data import DataLoader

from headstart.allocator import keep_freed_memory
from headstart.backbones import Backbone, BackboneRef
from headstart.config import FitConfig
from headstart.errors import DataError
from headstart.finetune.callbacks import write_history
from headstart.finetune.data import DecodedImages, EpochSampler
from headstart.finetune.trainer import build_trainer, read_checkpoint
from headstart.pretrain.module import PretrainModule
from headstart.pretrain.options import PretrainOptions
from headstart.pretrain.trunk import ViewBank
from headstart.pretrain.views import PairDataset, view_transforms

__all__ = ["Trained", "train_network"]


@dataclass(frozen=True)
class Trained:
    """The adapted network and what its training did."""

    backbone: Backbone
    trained: list[str]
    images: int
    epochs_run: int
    steps: int
    history: list[dict[str, float]]


def decode(paths: list[Path], ref: BackboneRef, size: int, budget_mb: int) -> DecodedImages:
    """The images decoded once, shorter side resized for ``size``-pixel views (the backbone's
    resize-to-crop ratio), unreadable ones left out; a one-line error when fewer than two
    remain."""
    prep = ref.preprocessing
    small = replace(prep, crop=size, resize=max(size, round(size * prep.resize / prep.crop)))
    images = DecodedImages(paths, small, budget_mb)
    failures = images.check_all()
    if not failures:
        return images
    rows = [i for i in range(len(paths)) if i not in failures]
    if len(rows) < 2:
        raise DataError(f"{len(rows)} of {len(paths)} images are readable; pretraining needs two")
    kept = DecodedImages([paths[i] for i in rows], small, budget_mb)
    kept._cache = {j: images._cache[i] for j, i in enumerate(rows) if i in images._cache}
    return kept


def train_network(
    paths: list[Path],
    out: Path,
    base: BackboneRef,
    opts: PretrainOptions,
    cfg: FitConfig,
    *,
    resume: bool,
    progress: bool,
) -> Trained:
    """Train ``base``'s last blocks on ``paths`` under ``opts`` (a
    :class:`~headstart.pretrain.run.PretrainOptions`) in the run folder ``out``."""
    seed = cfg.data.seed if cfg.train.seed is None else cfg.train.seed
    seed_everything(seed, workers=True, verbose=False)
    keep_freed_memory()
    ckpt = out / "checkpoints" / "last.ckpt"
    if resume:
        read_checkpoint(ckpt)  # damaged or code-carrying: one line, before any work
    method = opts.method
    images = decode(paths, base, opts.image_size, cfg.train.cache_images_mb)
    batch = min(opts.batch_size, len(images))
    loader = DataLoader(
        PairDataset(len(images), opts.views),
        batch_size=batch,
        sampler=EpochSampler(len(images), seed),
        drop_last=len(images) % batch == 1,  # a batch of one breaks BatchNorm in training
        num_workers=0,
    )
    steps_per_epoch = len(loader)
    epochs = opts.epochs
    module = PretrainModule(
        base.build(),
        method=method,
        train_blocks=opts.train_blocks,
        images=images,
        transforms=view_transforms(method, opts.image_size, base.preprocessing),
        bank=ViewBank(opts.cache_mb),
        lr=opts.lr,
        seed=seed,
        planned_steps=epochs * steps_per_epoch,
    )
    train_cfg = cfg.train.model_copy(update={"epochs": epochs, "frozen_epochs": 0})
    trainer, _ = build_trainer(
        train_cfg, out, progress=progress, monitor=None, max_time_s=opts.time_limit_s
    )
    trainer.fit(
        module,
        train_dataloaders=loader,
        ckpt_path=str(ckpt) if resume else None,
        weights_only=True,  # checked by read_checkpoint; never unpickle code
    )
    if not trainer.is_global_zero:
        # DDP's other ranks are done once training is; only rank 0 writes the folder.
        raise SystemExit(0)
    # the epoch log's writer runs before the module's epoch-end hook adds the last row
    write_history(out / "logs" / "metrics.csv", module.history)
    backbone = module.student.backbone
    backbone.eval()
    return Trained(
        backbone,
        module.student.trained_names,
        len(images),
        len(module.history),
        int(trainer.global_step),
        list(module.history),
    )
