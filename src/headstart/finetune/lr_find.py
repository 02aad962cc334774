"""Learning-rate range test through Lightning's ``Tuner.lr_find`` (fastai's ``lr_find``)."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lightning.pytorch import Trainer
from lightning.pytorch.tuner import Tuner

from headstart.config import FitConfig
from headstart.embedding import scan_data
from headstart.errors import DataError
from headstart.finetune.run import build_parts, data_recipe, require_one_network
from headstart.fsutil import atomic_write_text

__all__ = ["LRFindResult", "lr_find"]


@dataclass(frozen=True)
class LRFindResult:
    """The suggested ``train.lr``, the curve it came from and where the plot went."""

    suggestion: float | None
    lrs: list[float]
    losses: list[float]
    plot: Path
    record: Path


def lr_find(
    data: str | Path,
    config: FitConfig,
    output: str | Path,
    *,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    steps: int = 100,
    progress: bool = True,
) -> LRFindResult:
    """Train for up to ``steps`` batches with an exponentially growing learning rate (the
    recipe's first phase: head-only when ``train.frozen_epochs`` > 0), suggest the rate of the
    steepest loss descent, and save ``lr_find.png`` and ``lr_find.json`` in ``output``."""
    # lazy: matplotlib only to draw this plot
    import matplotlib

    matplotlib.use("Agg")
    require_one_network(config, "the learning-rate finder")  # before any folder or scan
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    manifest = scan_data(data, config)
    config = data_recipe(config, manifest)  # text data: its encoder and text defaults
    parts = build_parts(manifest, config)
    trainer = Trainer(
        max_epochs=max(1, config.train.frozen_epochs),
        accelerator=config.train.accelerator,
        devices=1,
        default_root_dir=out,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    finder = Tuner(trainer).lr_find(
        parts.module,
        datamodule=parts.datamodule,
        min_lr=min_lr,
        max_lr=max_lr,
        num_training=steps,
        update_attr=False,
    )
    if finder is None or not finder.results.get("lr"):
        raise DataError("the learning-rate finder ran no step: the training split is empty")
    suggestion = finder.suggestion()
    plot = out / "lr_find.png"
    fig = finder.plot(suggest=suggestion is not None)
    fd, tmp = tempfile.mkstemp(prefix=".lr_find.", suffix=".png", dir=out)
    os.close(fd)
    fig.savefig(tmp, dpi=110)  # type: ignore[union-attr]
    os.replace(tmp, plot)
    lrs = [float(v) for v in finder.results["lr"]]
    losses = [float(v) for v in finder.results["loss"]]
    record = out / "lr_find.json"
    doc = {"suggestion": suggestion, "lr": lrs, "loss": losses, "steps": len(lrs)}
    atomic_write_text(record, json.dumps(doc, indent=2) + "\n")
    return LRFindResult(suggestion, lrs, losses, plot, record)
