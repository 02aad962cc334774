"""Callbacks and plugins of the fine-tuning run: atomic checkpoints and the epoch log file."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.plugins.io import TorchCheckpointIO

from headstart.fsutil import atomic_write_text

__all__ = ["HISTORY_COLUMNS", "AtomicCheckpointIO", "HistoryWriter", "write_history"]

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_acc", "lr", "img_s", "frozen")


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the destination folder, then ``os.replace``.

    Lightning's own save goes through an fsspec transaction whose temporary file lives in the
    system temp folder, so the final move is a copy across file systems and a ``kill -9`` in the
    middle leaves a truncated checkpoint; a rename within one folder cannot."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    """``metrics.csv``: one row per epoch (epoch, train_loss, val_loss, val_acc, lr, img_s,
    frozen), written atomically."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(HISTORY_COLUMNS)
    for row in rows:
        cells = []
        for key in HISTORY_COLUMNS:
            value = row.get(key, float("nan"))
            cells.append(str(int(value)) if key in ("epoch", "frozen") else f"{value:.6g}")
        writer.writerow(cells)
    atomic_write_text(path, buffer.getvalue())


class HistoryWriter(Callback):
    """Rewrites ``RUN/logs/metrics.csv`` after every epoch from the module's history (which
    travels in the checkpoints, so a resumed run keeps the rows of the epochs before the kill)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            write_history(self.path, list(getattr(pl_module, "history", [])))
