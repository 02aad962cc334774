"""The LightningModule of self-supervised pretraining: lightly's losses and heads on the
trainable tail of a :class:`~headstart.pretrain.trunk.SplitBackbone`.

* SimCLR: a projection head and the NT-Xent loss over the batch (negatives gathered from every
  rank under DDP).
* BYOL: projection + prediction heads; the target is a momentum copy of the tail and the
  projection (momentum 0.99 → 1 on a cosine over the planned steps); symmetric negative
  cosine similarity.
* DINO: projection heads with a momentum teacher, DINO's centred, sharpened cross-entropy over
  the two global views.

The trunk is frozen and shared by student and teacher, so the trunk activations of a view
(kept in a :class:`~headstart.pretrain.trunk.ViewBank`) serve both.  Activations round through
float16 whether just computed or kept, so a resumed run computes what the uninterrupted one
did.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn

from headstart.backbones.model import Backbone
from headstart.finetune.data import DecodedImages
from headstart.pretrain.trunk import SplitBackbone, ViewBank
from headstart.pretrain.views import ViewTransform, make_view, view_seed

__all__ = ["PretrainModule"]

#: Trunk activations are computed in chunks of this many views.
_CHUNK = 64


def _lightly() -> tuple[Any, Any, Any, Any]:
    # lazy: an optional dependency (views.py says how to install it before this runs)
    import lightly.loss
    import lightly.models.modules
    import lightly.models.utils
    import lightly.utils.scheduler

    return lightly.loss, lightly.models.modules, lightly.models.utils, lightly.utils.scheduler


def _head_factory(heads: Any, method: str, dim: int) -> Callable[[], nn.Module]:
    """A maker of ``method``'s projection head on ``dim`` features (small: a CPU trains it)."""
    if method == "simclr":
        return lambda: heads.SimCLRProjectionHead(dim, 512, 128)
    if method == "byol":
        return lambda: heads.BYOLProjectionHead(dim, 1024, 256)
    # lightly's own use of torch's old weight_norm: nothing the user can act on
    warnings.filterwarnings(
        "ignore", message=r".*weight_norm.* is deprecated", category=FutureWarning
    )
    return lambda: heads.DINOProjectionHead(dim, 512, 64, 2048, freeze_last_layer=1)


class PretrainModule(LightningModule):
    """Student (and, for BYOL and DINO, momentum teacher) over kept trunk activations; the
    ``history`` of per-epoch rows travels in the checkpoints."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        method: str,
        train_blocks: int,
        images: DecodedImages,
        transforms: list[ViewTransform],
        bank: ViewBank,
        lr: float,
        seed: int,
        planned_steps: int,
    ) -> None:
        super().__init__()
        loss, heads, _, _ = _lightly()
        dim = int(backbone.feature_dim)
        teacher = copy.deepcopy(backbone) if method != "simclr" else None
        self.student = SplitBackbone(backbone, train_blocks)
        self.method, self.lr, self.seed = method, lr, seed
        self.images, self.transforms, self.bank = images, transforms, bank
        self.planned_steps = max(planned_steps, 1)
        self.history: list[dict[str, float]] = []
        self._epoch: dict[str, float] = {}
        self.teacher: SplitBackbone | None = None
        self.teacher_head: nn.Module | None = None
        self.predictor: nn.Module | None = None
        make_head = _head_factory(heads, method, dim)
        self.head: nn.Module = make_head()
        if method == "simclr":
            self.criterion: nn.Module = loss.NTXentLoss(temperature=0.2, gather_distributed=True)
        elif method == "byol":
            self.predictor = heads.BYOLPredictionHead(256, 1024, 256)
            self.criterion = loss.NegativeCosineSimilarity()
        else:
            self.criterion = loss.DINOLoss(output_dim=2048, warmup_teacher_temp_epochs=0)
        if teacher is not None:
            self.teacher = SplitBackbone(teacher, train_blocks)
            # built anew and loaded: DINO's weight-normalised layer cannot be deep-copied
            self.teacher_head = make_head()
            self.teacher_head.load_state_dict(self.head.state_dict())
            for p in [*self.teacher.parameters(), *self.teacher_head.parameters()]:
                p.requires_grad_(False)

    # -- the views and their trunk activations ---------------------------------------------
    def _activations(self, keys: Sequence[tuple[int, int]]) -> Tensor:
        fresh: dict[tuple[int, int], Tensor] = {}
        missing = self.bank.missing(keys)
        for start in range(0, len(missing), _CHUNK):
            chunk = missing[start : start + _CHUNK]
            views = torch.stack(
                [
                    make_view(self.transforms, self.images[i], view_seed(self.seed, i, v), v)
                    for i, v in chunk
                ]
            ).to(self.device)
            out = self.student.trunk(views).to(torch.float16)
            fresh.update(zip(chunk, out, strict=True))
        self.bank.keep(fresh)
        rows = [self.bank.get(k, fresh) for k in keys]
        return torch.stack(rows).to(self.device, torch.float32)

    # -- the objectives --------------------------------------------------------------------
    def _loss(self, a: Tensor, b: Tensor) -> Tensor:
        if self.method == "simclr":
            out: Tensor = self.criterion(
                self.head(self.student.tail(a)), self.head(self.student.tail(b))
            )
            return out
        if self.teacher is None or self.teacher_head is None:
            raise TypeError(f"{self.method} was built without its teacher")  # a bug, not input
        with torch.no_grad():
            t_a = self.teacher_head(self.teacher.tail(a))
            t_b = self.teacher_head(self.teacher.tail(b))
        s_a, s_b = self.head(self.student.tail(a)), self.head(self.student.tail(b))
        if self.method == "byol":
            predictor = self.predictor or nn.Identity()
            p_a, p_b = predictor(s_a), predictor(s_b)
            return 0.5 * (self.criterion(p_a, t_b) + self.criterion(p_b, t_a))
        loss: Tensor = self.criterion([t_a, t_b], [s_a, s_b], epoch=self.current_epoch)
        return loss

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        """One step over a batch of (image, view a, view b) rows."""
        t0 = time.perf_counter()
        rows = batch.tolist()
        a = self._activations([(i, va) for i, va, _ in rows])
        b = self._activations([(i, vb) for i, _, vb in rows])
        loss = self._loss(a, b)
        # the epoch's loss is the mean over every process's steps (a no-op on one process)
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, sync_dist=True)
        seconds = time.perf_counter() - t0
        self._epoch["images"] = self._epoch.get("images", 0.0) + len(rows)
        self._epoch["seconds"] = self._epoch.get("seconds", 0.0) + seconds
        return loss

    def on_after_backward(self) -> None:
        if self.method == "dino":
            self.head.cancel_last_layer_gradients(self.current_epoch)  # type: ignore[operator]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.teacher is None or self.teacher_head is None:
            return
        _, _, utils, scheduler = _lightly()
        step = min(self.global_step, self.planned_steps)
        momentum = scheduler.cosine_schedule(step, self.planned_steps, 0.99, 1.0)
        utils.update_momentum(self.student.trainable, self.teacher.trainable, momentum)
        utils.update_momentum(self.head, self.teacher_head, momentum)

    def on_train_epoch_end(self) -> None:
        loss = self.trainer.callback_metrics.get("train_loss_epoch")
        seconds = self._epoch.get("seconds", 0.0)
        self.history.append(
            {
                "epoch": float(self.current_epoch),
                "train_loss": float(loss) if loss is not None else float("nan"),
                "lr": self.lr,
                "img_s": self._epoch.get("images", 0.0) / seconds if seconds else float("nan"),
                "frozen": 0.0,
            }
        )
        self._epoch = {}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        """AdamW: the new heads at ``lr``, the pretrained blocks at a tenth of it (as
        fine-tuning's ``backbone_lr_ratio``), so a random head cannot wreck them early."""
        heads = [*self.head.parameters(), *(self.predictor.parameters() if self.predictor else [])]
        groups = [
            {"params": [p for p in heads if p.requires_grad], "lr": self.lr},
            {"params": list(self.student.trainable.parameters()), "lr": self.lr * 0.1},
        ]
        return torch.optim.AdamW(groups, weight_decay=1e-4)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["pretrain_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("pretrain_history", []))
