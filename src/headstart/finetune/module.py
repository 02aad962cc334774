"""The LightningModule: a pretrained backbone plus a new linear head, trained by the recipe.

Why not Lightning's ``BackboneFinetuning`` callback: it unfreezes by flipping ``requires_grad``
and calling ``optimizer.add_param_group`` mid-run.  Under DDP the gradient buckets are fixed when
the model is wrapped, so parameters unfrozen later are never all-reduced and replicas drift; the
LR scheduler built at the start does not know the added groups; and it leaves frozen BatchNorm
layers in train mode, so their running statistics still move.  Here every trainable parameter
is in the optimiser from step 0 (per-block groups, layer-wise decay); during the head-only epochs
the backbone runs under ``no_grad`` with its BatchNorm layers in eval mode, so its weights get no
gradient (AdamW skips them, weight decay included) and its statistics stay those of pretraining.

The head is ``Dropout → Linear`` over the backbone's pooled features, its output columns the
tasks' slices (:mod:`headstart.finetune.targets`): one shared backbone, a head per task, and the
loss the weighted sum over tasks (``train.task_weights``, default 1 each) of cross-entropy on a
multi-class slice (label smoothing, class weights when the imbalance remedy asks for them) and
binary cross-entropy on a multi-label one.  The validation score that early stopping and the
best checkpoint follow (logged as ``val_acc``) is the mean over tasks of accuracy (multi-class)
and per-image F1 at threshold 0.5 (multi-label): for one multi-class task, plain accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.nn import functional as F

from headstart.backbones.model import Backbone
from headstart.config import TrainConfig
from headstart.data import Task
from headstart.errors import ConfigError
from headstart.finetune.recipe import (
    backbone_blocks,
    frozen_modules,
    param_groups,
    set_batchnorm_eval,
)
from headstart.finetune.schedules import PhasePlan, lr_factors
from headstart.finetune.soft import Distillation, distillation_loss
from headstart.finetune.targets import Mixer, class_weight_rows, task_slices
from headstart.finetune.text import TextEncoder

__all__ = ["FinetuneModule"]


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class FinetuneModule(LightningModule):
    """Backbone + ``Dropout → Linear`` head over every task's slice, trained head-only then
    unfrozen (see the module docstring)."""

    def __init__(
        self,
        backbone: Backbone | TextEncoder,
        tasks: Sequence[Task],
        config: TrainConfig,
        *,
        seed: int = 0,
        class_weights: dict[str, Tensor] | None = None,
        mixer: Mixer | None = None,
        distill: Distillation | None = None,
    ) -> None:
        super().__init__()
        weights = dict(config.task_weights)
        unknown = sorted(set(weights) - {t.name for t in tasks})
        if unknown:
            raise ConfigError(
                f"train.task_weights names unknown task(s) {', '.join(unknown)}; "
                f"tasks: {', '.join(t.name for t in tasks)}"
            )
        # channels-last convolutions are ~1.5x faster on CPU (oneDNN) and no slower on GPUs
        self.backbone = backbone.to(memory_format=torch.channels_last)
        self.config = config
        self.seed = seed
        self.mixer = mixer
        self.distill = distill
        self.tasks = list(tasks)
        self.slices = task_slices(tasks)
        self.task_weights = [float(weights.get(t.name, 1.0)) for t in tasks]
        width = sum(len(t.classes) for t in tasks)
        self.head = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(backbone.feature_dim, width)
        )
        self.register_buffer(
            "class_weights", class_weight_rows(tasks, class_weights or {}), persistent=False
        )
        self.blocks = backbone_blocks(backbone)
        self.always_frozen = frozen_modules(self.blocks, config.unfreeze_last)
        trainable = {id(p) for b in self.blocks for p in b.module.parameters()}
        for module in self.always_frozen:
            trainable -= {id(p) for p in module.parameters()}
        for p in backbone.parameters():
            # the library's ImageNet classifier and the frozen blocks never train
            p.requires_grad_(id(p) in trainable)
        self.history: list[dict[str, float]] = []
        self._sums = {"loss": 0.0, "n": 0.0, "val_loss": 0.0, "val_hit": 0.0, "val_n": 0.0}
        self._epoch_start = time.perf_counter()

    # -- tasks ----------------------------------------------------------------------------
    def loss(
        self, logits: Tensor, target: Tensor, *, train: bool, soft: Tensor | None = None
    ) -> Tensor:
        """The weighted sum over tasks of each slice's loss; ``target`` rows may be soft
        (MixUp/CutMix).  ``soft``: a distillation run's teacher rows and labelled shares
        (:mod:`headstart.finetune.soft`), mixed with the hard targets by its ``alpha``."""
        smoothing = self.config.label_smoothing if train else 0.0
        weights = self.class_weights if isinstance(self.class_weights, Tensor) else None
        if soft is not None:
            if self.distill is None:
                raise ValueError("soft targets need the module's distillation settings")
            return distillation_loss(
                logits,
                target,
                soft,
                tasks=self.tasks,
                slices=self.slices,
                task_weights=self.task_weights,
                distill=self.distill,
                smoothing=smoothing,
                class_weights=weights,
            )
        total = logits.new_zeros(())
        for task, cols, weight in zip(self.tasks, self.slices, self.task_weights, strict=True):
            z, t = logits[:, cols], target[:, cols].to(logits.dtype)
            if task.multi_label:
                part = F.binary_cross_entropy_with_logits(z, t)
            else:
                part = _cross_entropy(z, t, smoothing, None if weights is None else weights[cols])
            total = total + weight * part
        return total

    def predictions(self, logits: Tensor) -> Tensor:
        """Softmax over each multi-class slice, sigmoid over each multi-label one."""
        parts = [
            logits[:, cols].sigmoid() if task.multi_label else logits[:, cols].softmax(dim=1)
            for task, cols in zip(self.tasks, self.slices, strict=True)
        ]
        return torch.cat(parts, dim=1)

    def sample_scores(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per image, the mean over tasks of: correct (multi-class) or F1 at 0.5 (multi-label;
        1 when the image has no label and none is predicted)."""
        scores = []
        for task, cols in zip(self.tasks, self.slices, strict=True):
            t, z = target[:, cols], logits[:, cols]
            if task.multi_label:
                pred = (z > 0).float()
                tp = (pred * t).sum(1)
                denominator = pred.sum(1) + t.sum(1)
                scores.append(torch.where(denominator > 0, 2 * tp / denominator.clamp(min=1), 1.0))
            else:
                scores.append((z.argmax(1) == t.argmax(1)).float())
        return torch.stack(scores, dim=1).mean(dim=1)

    def linear_layer(self) -> nn.Linear:
        """The head's final ``Linear`` (each task's rows are exported to the bundle)."""
        layer = list(self.head.modules())[-1]
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"head ends in {type(layer).__name__}, not Linear")
        return layer

    # -- recipe ---------------------------------------------------------------------------
    @property
    def backbone_frozen(self) -> bool:
        """True during the head-only epochs."""
        return self.current_epoch < self.config.frozen_epochs

    def train(self, mode: bool = True) -> FinetuneModule:
        """Lightning switches the whole model to train mode; frozen parts go back to eval."""
        super().train(mode)
        if mode:
            if self.backbone_frozen and isinstance(self.backbone, TextEncoder):
                # no dropout while frozen: the head learns on the probe's very embeddings
                self.backbone.eval()
            elif self.backbone_frozen:
                set_batchnorm_eval(self.backbone)
            for module in self.always_frozen:
                set_batchnorm_eval(module)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, columns of every task)."""
        out: Tensor = self.head(self.backbone(_channels_last(x)))
        return out

    def _features(self, x: Tensor) -> Tensor:
        x = _channels_last(x)
        if self.backbone_frozen:
            with torch.no_grad():
                return self.backbone(x)
        feats: Tensor = self.backbone(x)
        return feats

    def _l1(self) -> Tensor | float:
        if self.config.l1 <= 0:
            return 0.0
        params = list(self.head.parameters())
        if not self.backbone_frozen:
            params += [p for p in self.backbone.parameters() if p.requires_grad]
        return self.config.l1 * sum(p.abs().sum() for p in params)

    # -- Lightning hooks ------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self.train()
        self._sums.update(loss=0.0, n=0.0)
        self._epoch_start = time.perf_counter()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout and MixUp draw from torch's global generator, which Lightning's data loading
        # also touches at moments that differ between a fresh and a resumed run: seeding it per
        # (seed, epoch, batch, rank) makes each step's randomness independent of the run's
        # history, which is what lets a resumed run match an uninterrupted one.
        step_seed = (self.seed * 1_000_003 + self.current_epoch) * 100_003 + batch_idx
        torch.manual_seed(step_seed * 64 + self.global_rank)

    def training_step(self, batch: tuple[Tensor, ...], batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        soft = batch[2] if len(batch) > 2 else None  # a distillation run's teacher rows
        target: Tensor = y
        if self.mixer is not None and soft is None:
            x, target = self.mixer(x, y)
        elif self.mixer is not None and soft is not None:
            # one mix of both rows, so the teacher's row follows its image like the target's
            x, both = self.mixer(x, torch.cat([y.to(soft.dtype), soft], dim=1))
            target, soft = both[:, : y.shape[1]], both[:, y.shape[1] :]
        logits = self.head(self._features(x))
        loss = self.loss(logits, target, train=True, soft=soft) + self._l1()
        n = float(x.shape[0])
        self._sums["loss"] += float(loss.detach()) * n
        self._sums["n"] += n
        seconds = max(time.perf_counter() - self._epoch_start, 1e-9)
        self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False)
        self.log("img_s", self._sums["n"] / seconds, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._sums.update(val_loss=0.0, val_hit=0.0, val_n=0.0)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self._sums["val_loss"] += float(self.loss(logits, y, train=False)) * len(y)
        self._sums["val_hit"] += float(self.sample_scores(logits, y).sum())
        self._sums["val_n"] += float(len(y))

    def on_validation_epoch_end(self) -> None:
        local = torch.tensor([self._sums[k] for k in ("val_loss", "val_hit", "val_n")])
        total = torch.as_tensor(self.trainer.strategy.reduce(local, reduce_op="sum"))
        n = max(float(total[2]), 1.0)
        val_loss, val_acc = float(total[0]) / n, float(total[1]) / n
        self.log("val_loss", val_loss, prog_bar=False)
        self.log("val_acc", val_acc, prog_bar=True)
        if self.trainer.sanity_checking:
            return
        seconds = time.perf_counter() - self._epoch_start
        optimizer = self.trainer.optimizers[0] if self.trainer.optimizers else None
        self.history.append(
            {
                "epoch": float(self.current_epoch),
                "train_loss": self._sums["loss"] / max(self._sums["n"], 1.0),
                "val_loss": val_loss,
                "val_acc": val_acc,
                "lr": float(optimizer.param_groups[0]["lr"]) if optimizer else 0.0,
                "img_s": self._sums["n"] * self.trainer.world_size / max(seconds, 1e-9),
                "frozen": float(self.backbone_frozen),
            }
        )

    def configure_optimizers(self) -> Any:
        cfg = self.config
        groups = param_groups(
            self.head,
            self.blocks,
            lr=cfg.lr,
            backbone_lr_ratio=cfg.backbone_lr_ratio,
            layer_decay=cfg.layer_decay,
            weight_decay=cfg.weight_decay,
            unfreeze_last=cfg.unfreeze_last,
        )
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if cfg.schedule == "plateau":
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=0.3, patience=1
            )
            return {
                "optimizer": optimizer,
                "lr_scheduler": {"scheduler": plateau, "monitor": "val_acc", "interval": "epoch"},
            }
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, -(-total // max(self.trainer.max_epochs or 1, 1)))
        plan = PhasePlan(
            total=total,
            frozen=min(cfg.frozen_epochs * per_epoch, total),
            warmup=round(cfg.warmup_epochs * per_epoch),
            steps_per_epoch=per_epoch,
            step_epochs=cfg.step_epochs,
        )
        factors = lr_factors(cfg.schedule, plan, [g["name"].startswith("head") for g in groups])
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["headstart_history"] = list(self.history)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("headstart_history", []))


def _cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float, weight: Tensor | None
) -> Tensor:
    """Cross-entropy of (possibly soft) target rows with label smoothing; with class weights,
    the weighted mean over the batch, normalised as PyTorch does for class-index targets (by the
    summed weight of each row's class), so hard targets give exactly its numbers."""
    if weight is None:
        return F.cross_entropy(logits, target, label_smoothing=smoothing)
    per_row = F.cross_entropy(
        logits, target, weight=weight, label_smoothing=smoothing, reduction="none"
    )
    return per_row.sum() / (target @ weight).sum().clamp(min=1e-12)
