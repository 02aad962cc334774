"""The LightningModule: a pretrained backbone plus a new linear head, trained by the recipe.

Why not Lightning's ``BackboneFinetuning`` callback: it unfreezes by flipping ``requires_grad``
and calling ``optimizer.add_param_group`` mid-run.  Under DDP the gradient buckets are fixed when
the model is wrapped, so parameters unfrozen later are never all-reduced and replicas drift; the
LR scheduler built at the start does not know the added groups; and it leaves frozen BatchNorm
layers in train mode, so their running statistics still move.  Here every trainable parameter
is in the optimiser from step 0 (per-block groups, layer-wise decay); during the head-only epochs
the backbone runs under ``no_grad`` with its BatchNorm layers in eval mode, so its weights get no
gradient (AdamW skips them, weight decay included) and its statistics stay those of pretraining.

The head is ``Dropout → Linear`` over the backbone's pooled features.  A later multi-label or
multi-task variant overrides :meth:`make_head`, :meth:`loss` and :meth:`predictions` (sigmoid
outputs, one head per task) and keeps the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torch.nn import functional as F

from headstart.backbones.model import Backbone
from headstart.config import TrainConfig
from headstart.finetune.recipe import (
    backbone_blocks,
    frozen_modules,
    param_groups,
    set_batchnorm_eval,
)
from headstart.finetune.schedules import PhasePlan, lr_factors

__all__ = ["FinetuneModule"]

Mixer = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


class FinetuneModule(LightningModule):
    """Backbone + ``Dropout → Linear`` head, trained head-only then unfrozen (see module doc)."""

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int,
        config: TrainConfig,
        *,
        seed: int = 0,
        class_weights: Tensor | None = None,
        mixer: Mixer | None = None,
    ) -> None:
        super().__init__()
        # channels-last convolutions are ~1.5x faster on CPU (oneDNN) and no slower on GPUs
        self.backbone = backbone.to(memory_format=torch.channels_last)
        self.config = config
        self.seed = seed
        self.mixer = mixer
        self.head = self.make_head(backbone.feature_dim, num_classes)
        self.register_buffer("class_weights", class_weights, persistent=False)
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

    # -- pieces a multi-label / multi-task variant replaces -------------------------------
    def make_head(self, feature_dim: int, num_classes: int) -> nn.Module:
        """The new head on the pooled features."""
        return nn.Sequential(nn.Dropout(self.config.dropout), nn.Linear(feature_dim, num_classes))

    def loss(self, logits: Tensor, target: Tensor, *, train: bool) -> Tensor:
        """Cross-entropy (class-weighted when set; label smoothing in training); ``target`` is
        class indices or, after MixUp/CutMix, soft labels."""
        smoothing = self.config.label_smoothing if train else 0.0
        weights = self.class_weights if isinstance(self.class_weights, Tensor) else None
        return F.cross_entropy(logits, target, weight=weights, label_smoothing=smoothing)

    def linear_layer(self) -> nn.Linear:
        """The head's final ``Linear`` (exported to the bundle)."""
        layer = list(self.head.modules())[-1]
        if not isinstance(layer, nn.Linear):
            raise TypeError(f"head ends in {type(layer).__name__}, not Linear")
        return layer

    def predictions(self, logits: Tensor) -> Tensor:
        """Probabilities from logits (softmax over classes)."""
        return logits.softmax(dim=1)

    # -- recipe ---------------------------------------------------------------------------
    @property
    def backbone_frozen(self) -> bool:
        """True during the head-only epochs."""
        return self.current_epoch < self.config.frozen_epochs

    def train(self, mode: bool = True) -> FinetuneModule:
        """Lightning switches the whole model to train mode; frozen parts go back to eval."""
        super().train(mode)
        if mode:
            if self.backbone_frozen:
                set_batchnorm_eval(self.backbone)
            for module in self.always_frozen:
                set_batchnorm_eval(module)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Logits (N, num_classes)."""
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

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        target: Tensor = y
        if self.mixer is not None:
            x, target = self.mixer(x, y)
        logits = self.head(self._features(x))
        loss = self.loss(logits, target, train=True) + self._l1()
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
        self._sums["val_hit"] += float((logits.argmax(1) == y).sum())
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
