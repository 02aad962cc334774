"""``pretrain``: continue a pretrained backbone's training on your own images, without labels,
and write a backbone folder (:mod:`headstart.backbones.folder`) that ``fit -b OUT``,
``--strategy finetune``, ``rank-backbones`` and export take like a backbone name.

What pays on a CPU (``python benchmarks/pretrain.py --data-root ../shared/data``;
mobilenet_v2, 32 of clothing_small's training images, batch 32, one SimCLR step = forward +
backward + AdamW; image pairs per second, median of 3 steps, on 2 cores shared with other
jobs, so +-30%):

==========================================  =====  =====  =====
setting                                     224px  160px  128px
==========================================  =====  =====  =====
whole network trains                        1.1    2.2    3.0
last 3 blocks, trunk run on every step             4.8    8.7
last 3 blocks, trunk kept per view                 5.4    32.7
last 5 blocks, trunk run on every step             4.0    4.1
last 5 blocks, trunk kept per view                 7.2    22.8
making one augmented view (views/s)         13.1   16.0   28.0
==========================================  =====  =====  =====

Making the views (lightly's PIL recipes) costs as much as a tail step, so keeping each view's
trunk activations also makes each view once.  So the defaults: the last 3 blocks train, the
trunk frozen, 160-pixel views (128 is faster still; 160 keeps more detail), 4 fixed views per
image whose trunk activations are computed once and kept (float16), SimCLR, 10 epochs or
``time_limit``.  On a GPU (Lightning's ``accelerator=auto`` finds it) the same recipe runs
there.

The output folder doubles as the run folder: ``pretrain.json`` (the data, backbone and options;
whether it finished), ``checkpoints/last.ckpt`` after every epoch (``resume=True`` continues
from it after a kill: the same pairs and views, so the same result as an uninterrupted run),
``logs/metrics.csv``; ``backbone.json`` + ``backbone.safetensors`` once done.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headstart.backbones import BackboneRef, require_single, resolve_backbone
from headstart.backbones.folder import FOLDER_META, write_folder
from headstart.config import FitConfig
from headstart.data.walk import walk
from headstart.errors import ConfigError, DataError, PathNotFoundError
from headstart.fsutil import atomic_write_text
from headstart.pretrain.options import METHODS, PretrainOptions, require_lightly

if TYPE_CHECKING:
    from headstart.pretrain.training import Trained

__all__ = ["PretrainOptions", "PretrainResult", "image_paths", "pretrain"]

RECORD = "pretrain.json"


@dataclass(frozen=True)
class PretrainResult:
    """What a pretraining run made: the backbone folder's ref, the base's, and its figures."""

    output: Path
    backbone: BackboneRef
    base: BackboneRef
    options: PretrainOptions
    images: int
    epochs_run: int
    steps: int
    seconds: float
    trained: list[str]
    history: list[dict[str, float]] = field(default_factory=list)


def pretrain(
    data: str | Path | None,
    output: str | Path,
    *,
    backbone: str | None = None,
    method: str = "simclr",
    time_limit: str | float | None = None,
    config: FitConfig | None = None,
    options: PretrainOptions | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> PretrainResult:
    """Self-supervised adaptation of ``backbone`` (default: the config's) on the images under
    ``data`` (labels, if any, are ignored), written as a backbone folder at ``output``.

    ``method`` and ``time_limit`` (``"30m"`` or seconds) override ``options``; ``config``
    gives the devices, precision, distributed strategy and seed (``train.*``).  ``resume``
    continues a killed run from ``output/checkpoints/last.ckpt`` with the recorded data,
    backbone and options (``data`` may then be None)."""
    require_lightly()  # before any work: the one line that says how to install it
    cfg = config or FitConfig()
    out = Path(output).expanduser()
    weights = cfg.backbone.weights
    if resume:
        data, name, weights, opts = _read_record(out)
    else:
        # the pipeline layer (scikit-learn and more) loads only when a run starts
        from headstart.pipeline.presets import parse_duration

        limit = parse_duration(time_limit) if isinstance(time_limit, str) else time_limit
        opts = replace(options or PretrainOptions(), method=method, time_limit_s=limit)
        name = backbone or cfg.backbone.name
        _check_options(opts)
        if data is None:
            raise ConfigError("pretrain needs a folder of images (or resume=True)")
    base = _base_ref(name, weights)
    paths = image_paths(Path(data))
    if not resume and not _worker():
        _fresh_output(out, overwrite)
        where = {"data": str(Path(data).resolve()), "backbone": name}
        if weights is not None:
            where["weights"] = str(Path(weights).resolve())
        _write_record(out, where, opts, False)
    # torch and Lightning load here, when a network really trains
    from headstart.pretrain.training import train_network

    t0 = time.perf_counter()
    trained = train_network(paths, out, base, opts, cfg, resume=resume, progress=progress)
    seconds = time.perf_counter() - t0
    if _worker():  # the same weights as rank 0's (DDP keeps them equal), which writes them
        return PretrainResult(
            out, base, base, opts, trained.images, trained.epochs_run, trained.steps,
            round(seconds, 1), trained.trained, trained.history,
        )  # fmt: skip
    return _finish(out, base, opts, trained, seconds)


def _worker() -> bool:
    """True in the processes a DDP launch starts for its other ranks: they re-run the command,
    and must neither clear nor write the output folder, which rank 0 owns."""
    return os.environ.get("LOCAL_RANK", "0") != "0"


def _check_options(opts: PretrainOptions) -> None:
    if opts.method not in METHODS:
        raise ConfigError(
            f"unknown pretraining method {opts.method!r}; known: {', '.join(METHODS)}"
        )
    for key in ("train_blocks", "image_size", "epochs", "batch_size"):
        if getattr(opts, key) < 1:
            raise ConfigError(f"{key}={getattr(opts, key)}: give a positive whole number")
    if opts.views < 2 or opts.views % 2:
        raise ConfigError(f"views={opts.views}: give an even number of views per image, >= 2")


def _base_ref(name: str, weights: Path | None) -> BackboneRef:
    require_single(name, "pretraining", "pretrain one of its parts")
    ref = resolve_backbone(name, weights)
    if ref.text is not None:
        raise ConfigError(f"pretrain adapts image backbones; '{name}' is a text encoder")
    return ref


def image_paths(data: Path) -> list[Path]:
    """Every image under the folder ``data`` (the scan's walk: its names and link policy),
    sorted; class and split folders are read like any others."""
    folder = data.expanduser()
    if not folder.exists():
        raise PathNotFoundError(f"no such folder: '{folder}'")
    if not folder.is_dir():
        raise DataError(f"pretrain reads a folder of images, not the file '{folder}'")
    tree, _ = walk(folder.resolve())
    paths = sorted(tree.all_images())
    if len(paths) < 2:
        raise DataError(f"found {len(paths)} image(s) under '{folder}'; pretraining needs two")
    return paths


def _fresh_output(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(
                f"{out} exists and is not empty: pass --overwrite, or --resume to continue it"
            )
        if not ((out / RECORD).is_file() or (out / FOLDER_META).is_file()):
            raise ConfigError(f"refusing to overwrite {out}: it is not a pretrain output folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _write_record(out: Path, where: dict[str, str], opts: PretrainOptions, done: bool) -> None:
    record = {**where, "options": asdict(opts), "finished": done}
    atomic_write_text(out / RECORD, json.dumps(record, indent=2) + "\n")


def _read_record(out: Path) -> tuple[str, str, Path | None, PretrainOptions]:
    path = out / RECORD
    if not path.is_file():
        raise ConfigError(f"{out} has no {RECORD}: it is not a pretrain run to resume")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        opts = PretrainOptions(**record["options"])
        data, name = str(record["data"]), str(record["backbone"])
        weights = Path(record["weights"]) if record.get("weights") else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc!r}") from None
    if record.get("finished"):
        raise ConfigError(f"{out} already finished; pretrain again with --overwrite")
    if not (out / "checkpoints" / "last.ckpt").is_file():
        raise ConfigError(f"{out} has no checkpoint to resume from (it stopped before one)")
    return data, name, weights, opts


def _finish(
    out: Path, base: BackboneRef, opts: PretrainOptions, trained: Trained, seconds: float
) -> PretrainResult:
    """Write the backbone folder and mark the run finished (its checkpoints go)."""
    details: dict[str, Any] = {
        "options": asdict(opts),
        "images": trained.images,
        "epochs_run": trained.epochs_run,
        "steps": trained.steps,
        "seconds": round(seconds, 1),
    }
    ref = write_folder(
        out,
        trained.backbone,
        base,
        method=opts.method,
        trained=trained.trained,
        details=details,
    )
    record = json.loads((out / RECORD).read_text(encoding="utf-8"))
    where = {k: record[k] for k in ("data", "backbone", "weights") if k in record}
    _write_record(out, where, opts, True)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # the folder travels without them
    return PretrainResult(
        out,
        ref,
        base,
        opts,
        trained.images,
        trained.epochs_run,
        trained.steps,
        details["seconds"],
        trained.trained,
        trained.history,
    )
