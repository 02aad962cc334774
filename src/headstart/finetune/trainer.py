"""The Lightning ``Trainer`` of a fine-tuning run: callbacks, loggers, precision, devices."""

from __future__ import annotations

import logging
import pickle
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import (
    EarlyStopping,
    EMAWeightAveraging,
    ModelCheckpoint,
    TQDMProgressBar,
)
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

from headstart.config import TrainConfig
from headstart.errors import ConfigError, WeightsError
from headstart.finetune.callbacks import AtomicCheckpointIO, HistoryWriter
from headstart.finetune.module import FinetuneModule

__all__ = [
    "build_trainer",
    "load_best",
    "read_checkpoint",
    "resolve_precision",
    "tensorboard_available",
]

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true")


def tensorboard_available() -> bool:
    """True when Lightning's TensorBoard logger can be used (tensorboard or tensorboardX)."""
    for name in ("tensorboard", "tensorboardX"):
        try:
            __import__(name)
            return True
        except ImportError:
            continue
    return False


def resolve_precision(cfg: TrainConfig) -> str:
    """``train.precision`` or the default: bf16-mixed on a CUDA GPU that supports it, else
    32-true.  bf16 is not the CPU default: on the project's CPUs (``get_cpu_capability()`` is
    AVX2, no AVX-512 bf16) a MobileNetV2 training step under bf16 autocast ran at 0.14 img/s
    against 0.58-0.84 img/s in fp32 (same loaded machine, batch 8): about 5x slower."""
    if cfg.precision is not None:
        if cfg.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {cfg.precision!r}; valid: {', '.join(PRECISIONS)}"
            )
        return cfg.precision
    gpu = cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if gpu and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def _strategy(cfg: TrainConfig) -> Any:
    if cfg.distributed.startswith("ddp") and cfg.frozen_epochs > 0:
        # The backbone gets no gradient during the head-only epochs: DDP must allow that.
        if cfg.distributed == "ddp_spawn":
            return DDPStrategy(find_unused_parameters=True, start_method="spawn")
        return DDPStrategy(find_unused_parameters=True)
    return cfg.distributed


def _loggers(log_dir: Path) -> list[Logger]:
    loggers: list[Logger] = [CSVLogger(log_dir, name="lightning", version="")]
    if tensorboard_available():
        loggers.append(TensorBoardLogger(log_dir, name="tensorboard", version=""))
    return loggers


def build_trainer(
    cfg: TrainConfig,
    run_dir: Path,
    *,
    progress: bool,
    monitor: str | None = "val_acc",
    max_time_s: float | None = None,
) -> tuple[Trainer, ModelCheckpoint]:
    """A Trainer writing ``run_dir/checkpoints`` (best by ``monitor`` + last) and
    ``run_dir/logs``.  ``monitor=None`` (no validation: self-supervised pretraining): only
    ``last.ckpt`` after every epoch, no early stopping.  ``max_time_s``: Lightning stops there
    (the time spent travels in the checkpoints, so it bounds a resumed run's total)."""
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="best",
        monitor=monitor,
        mode="max",
        save_last=True,
        save_top_k=1 if monitor else 0,
        enable_version_counter=False,
    )
    callbacks: list[Callback] = [checkpoint, HistoryWriter(run_dir / "logs" / "metrics.csv")]
    if monitor:
        callbacks.insert(1, EarlyStopping(monitor=monitor, mode="max", patience=cfg.patience))
    if cfg.ema:
        callbacks.append(EMAWeightAveraging(decay=cfg.ema_decay))
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=1))
    # Lightning's info lines (devices found, tips, dataloader notes) are not the user's: the
    # progress bar and the summary after the run say what happened
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # Frozen blocks are in eval mode on purpose (their BatchNorm statistics must not move).
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
    # Lightning's own use of a deprecated torch API, nothing the user can act on
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    try:
        trainer = Trainer(
            max_epochs=cfg.epochs,
            max_time=None if max_time_s is None else timedelta(seconds=max_time_s),
            accelerator=cfg.accelerator,
            devices=cfg.devices,
            num_nodes=cfg.num_nodes,
            strategy=_strategy(cfg),
            precision=resolve_precision(cfg),  # type: ignore[arg-type]
            gradient_clip_val=cfg.grad_clip,
            accumulate_grad_batches=cfg.accumulate,
            callbacks=callbacks,
            logger=_loggers(run_dir / "logs"),
            plugins=[AtomicCheckpointIO()],
            default_root_dir=run_dir,
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=1,
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        # Lightning's own messages name the bad value (accelerator, devices, strategy)
        raise ConfigError(f"cannot set up training: {exc}") from None
    return trainer, checkpoint


def load_best(module: FinetuneModule, checkpoint: ModelCheckpoint) -> int | None:
    """Load the best checkpoint's weights into ``module``; returns its epoch (None when no
    checkpoint was written, and the final weights stay).  The path comes from state a resumed
    ``last.ckpt`` restored, so it must name a file in this run's checkpoint folder."""
    path = checkpoint.best_model_path
    if not path or not Path(path).is_file():
        return None
    folder = Path(checkpoint.dirpath or "").resolve()
    if Path(path).resolve().parent != folder:
        raise WeightsError(
            f"refused best checkpoint {path}: the resumed state names a file outside {folder}"
        )
    state = read_checkpoint(Path(path))
    module.load_state_dict(state["state_dict"])
    return int(state.get("epoch", -1))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A Lightning checkpoint of tensors and plain values (``weights_only``: a run folder may
    come from someone else, so nothing in it runs code); one-line error otherwise."""
    try:
        # mmap: the check before resuming maps the tensors instead of reading them twice
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError:
        raise WeightsError(
            f"refused checkpoint {path}: it holds more than tensors and plain values, and "
            "loading it could run code"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"cannot read checkpoint {path}: {first}") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise WeightsError(f"{path} is not a Lightning checkpoint (no state_dict)")
    return state
