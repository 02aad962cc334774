"""``distill``: a small student network fine-tuned on a teacher bundle's soft targets.

The teacher is any bundle (a probe, a fine-tuned network, a fused backbone, an ensemble): its
calibrated probabilities for every image of DATA (and of the unlabelled images) are computed
once and cached (:mod:`headstart.finetune.teacher`).  The student, one backbone of the
registry, is trained by the fine-tuning recipe (:mod:`headstart.finetune.run`: freeze →
unfreeze, layer decay, augmentation, early stopping on the hard labels of val, resume, DDP,
logs) with the loss of :mod:`headstart.finetune.soft`.  The student answers the teacher's tasks
with the teacher's classes, in the teacher's order.

The run folder is a fine-tuning run's (bundle, metrics, predictions, finetune.json with
strategy ``distill``, checkpoints, logs) plus ``distill.json``: the teacher (path, identity),
temperature and alpha, the images used, where the teacher's probabilities came from, and per
split and task the teacher's and the student's headline score and how often they agree.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import BackboneRef, require_single
from headstart.backbones.model import Backbone
from headstart.cache import CacheRoot
from headstart.config import FitConfig
from headstart.data import Manifest
from headstart.embedding import find_unlabelled, scan_data
from headstart.errors import ConfigError, DataError
from headstart.finetune.run import (
    build_parts,
    require_float32,
    scratch_recipe,
    start_record,
    train_parts,
)
from headstart.finetune.soft import Distillation, SoftTargets
from headstart.finetune.teacher import TeacherRows, load_teacher, teacher_rows
from headstart.finetune.trainer import read_checkpoint
from headstart.fsutil import atomic_write_text
from headstart.model import Model
from headstart.result import FitResult, write_result
from headstart.runfolder import RunFolder
from headstart.stats import headline, task_metrics

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_STUDENT",
    "DEFAULT_TEMPERATURE",
    "DISTILL_JSON",
    "distill",
    "resume_distill",
]

DEFAULT_STUDENT = "mobilenet_v2"
DEFAULT_TEMPERATURE = 2.0
"""Why 2 and 0.7: see :class:`headstart.config.DistillConfig`."""
DEFAULT_ALPHA = 0.7
DISTILL_JSON = "distill.json"


def distill(
    teacher: str | Path,
    data: str | Path,
    config: FitConfig,
    run_dir: str | Path,
    *,
    student: str = DEFAULT_STUDENT,
    unlabelled: str | Path | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    alpha: float = DEFAULT_ALPHA,
    overwrite: bool = False,
    progress: bool = True,
    resume: bool = False,
    start: tuple[BackboneRef, Backbone] | None = None,
    pruning: dict[str, Any] | None = None,
) -> FitResult:
    """Distil the bundle ``teacher`` (a bundle or a run folder) into ``student`` (a registry
    backbone; ``config.backbone.weights`` may name its local weights) on the labelled images of
    ``data`` and the images of ``unlabelled`` (a folder or a CSV of paths; soft term only),
    and write the run folder ``run_dir`` (see the module docstring).  ``temperature`` and
    ``alpha``: the loss of :mod:`headstart.finetune.soft`.  ``resume`` continues
    ``run_dir/checkpoints/last.ckpt``.
    Bad input (no teacher bundle, labels outside the teacher's classes, an unlabelled source
    without images, a fused student) is a one-line error before anything is written.
    ``start``: train this already built student network (and its ref), e.g. a pruned copy of
    the teacher's (:mod:`headstart.finetune.prune`, whose ``pruning`` record goes into
    finetune.json)."""
    require_float32(config)
    if not temperature > 0:
        raise ConfigError(f"--temperature must be above 0, got {temperature:g}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"--alpha must be between 0 and 1, got {alpha:g}")
    settings = config.distill.model_copy(
        update={
            # absolute: --resume may run from another folder
            "teacher": Path(teacher).resolve(),
            "unlabelled": None if unlabelled is None else Path(unlabelled).resolve(),
            "temperature": temperature,
            "alpha": alpha,
        }
    )
    backbone = config.backbone.model_copy(update={"name": student})
    cfg = config.model_copy(update={"distill": settings, "backbone": backbone})
    cfg = scratch_recipe(cfg)
    require_single(student, "distillation", "choose one backbone as the student")
    run = RunFolder(run_dir)
    ckpt = run.checkpoints / "last.ckpt"
    if resume:
        if not ckpt.is_file():
            raise ConfigError(f"{run.path} has no checkpoint to resume from ({ckpt} is missing)")
        read_checkpoint(ckpt)  # a damaged or code-carrying checkpoint: one line, first
    else:
        run.check_output(overwrite)
    _check_outside(run.path, [Path(data), *([Path(unlabelled)] if unlabelled else [])])
    model, identity = load_teacher(teacher, CacheRoot.for_config(cfg))
    if resume:
        _check_same_teacher(run, identity)
    cfg = _label_columns(cfg, model)
    manifest = _with_teacher_tasks(scan_data(data, cfg), model)
    extra, skipped = _unlabelled(Path(unlabelled), manifest) if unlabelled else ([], {})
    samples = manifest.samples
    paths = [s.path for s in samples] + [p for p, _ in extra]
    shas = [s.sha256 for s in samples] + [sha for _, sha in extra]
    taught = teacher_rows(model, identity, paths, shas, progress=progress)
    manifest, soft, skipped = _soft_targets(manifest, extra, skipped, taught, cfg, unlabelled)
    with run.lock():
        if not resume:
            shutil.rmtree(run.checkpoints, ignore_errors=True)  # a killed run's leftovers
            start_record(data, cfg, run, "distill")
            _write_record(
                run, {"teacher": str(Path(model.path or teacher).resolve()), "teacher_id": identity}
            )
        parts = build_parts(manifest, cfg, soft, start=start)
        result = train_parts(parts, cfg, run, progress=progress, ckpt=ckpt if resume else None)
        result.timings["teacher"] = taught.seconds
        if result.finetune is not None:
            result.finetune.strategy = "distill"
            result.finetune.pruning = pruning
        record = {
            "teacher": str(Path(model.path or teacher).resolve()),
            "teacher_id": identity,
            "teacher_backbone": model.backbone_name,
            "student": student,
            "temperature": temperature,
            "alpha": alpha,
            "images": {
                "labelled": len(result.manifest.split("train")),
                "unlabelled": parts.unlabelled,
                "unlabelled_skipped": skipped,
            },
            "teacher_probabilities": {
                "cached": taught.cached,
                "computed": taught.computed,
                "seconds": round(taught.seconds, 3),
            },
            "metrics": _compare(result, model, soft),
        }
        result.distill = record
        write_result(result)
        run.mark_finished()
    return result


def resume_distill(run_dir: str | Path, *, progress: bool = True) -> FitResult:
    """Continue a killed distillation run from its last checkpoint: the teacher, data, student
    and settings its ``resume.json`` and ``config.yaml`` name."""
    run = RunFolder(run_dir)
    record = run.read_resume()
    if record is None or record.strategy != "distill":
        raise ConfigError(f"{run.path} is not a distillation run to resume (no resume.json)")
    if record.finished:
        raise ConfigError(f"{run.path} finished already; its model is in {run.bundle}")
    cfg = run.read_config()
    s = cfg.distill
    if s.teacher is None:
        raise ConfigError(f"{run.path}/config.yaml names no distill.teacher")
    return distill(
        s.teacher,
        record.data,
        cfg,
        run.path,
        student=cfg.backbone.name,
        unlabelled=s.unlabelled,
        temperature=s.temperature,
        alpha=s.alpha,
        progress=progress,
        resume=True,
    )


# -- checks -------------------------------------------------------------------------------------
def _check_outside(output: Path, folders: Sequence[Path]) -> None:
    """Refuse a run folder inside a folder of images it reads (the next run would read the
    run's files as images)."""
    out = output.resolve()
    for folder in folders:
        if not folder.is_dir():
            continue
        root = folder.resolve()
        if out == root or root in out.parents:
            raise ConfigError(
                f"output {output} is inside the image folder {folder}: choose an -o outside it"
            )


def _check_same_teacher(run: RunFolder, identity: str) -> None:
    path = run.path / DISTILL_JSON
    try:
        started = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(started, dict) and started.get("teacher_id") not in (None, identity):
        raise ConfigError(
            f"the teacher {started.get('teacher')} changed since {run.path} started; distil "
            "it again into a new run folder"
        )


def _label_columns(cfg: FitConfig, model: Model) -> FitConfig:
    """The teacher's label columns when the config keeps the default one."""
    names = [t.name for t in model.tasks]
    if cfg.data.label_column != "label" or names == ["label"]:
        return cfg
    column: str | list[str] = names[0] if len(names) == 1 else names
    data = cfg.data.model_copy(update={"label_column": column})
    return cfg.model_copy(update={"data": data})


def _with_teacher_tasks(manifest: Manifest, model: Model) -> Manifest:
    """``manifest`` answering the teacher's tasks (its classes, in its order), after checking
    that every label of the data is one the teacher knows."""
    names = [t.name for t in model.tasks]
    have = [t.name for t in manifest.targets]
    if have != names:
        raise DataError(
            f"the teacher answers tasks {', '.join(names)}; the data has {', '.join(have)} "
            "(set data.label_column to the teacher's columns)"
        )
    for ours, theirs in zip(manifest.targets, model.tasks, strict=True):
        if ours.multi_label and not theirs.multi_label:
            raise DataError(f"task '{ours.name}' is multi-label in the data, not in the teacher")
        seen = {label for s in manifest.samples for label in s.labels[ours.name]}
        unknown = sorted(seen - set(theirs.classes))
        if unknown:
            where = "" if len(names) == 1 else f" in '{ours.name}'"
            raise DataError(
                f"labels the teacher does not know{where}: {', '.join(unknown)}; teacher "
                f"classes: {', '.join(theirs.classes)}"
            )
    return replace(manifest, targets=tuple(model.tasks))


def _unlabelled(source: Path, manifest: Manifest) -> tuple[list[tuple[Path, str]], dict[str, int]]:
    """The images of ``source`` (a folder or a CSV of paths) with their sha256, less those of
    DATA (by content: they are labelled there, or held out) and repeats; a one-line error
    when none is left."""
    found = find_unlabelled(source, known={s.sha256 for s in manifest.samples})
    return list(zip(found.paths, found.shas, strict=True)), {
        "in_data": found.known,
        "unreadable": found.unusable,
    }


def _soft_targets(
    manifest: Manifest,
    extra: list[tuple[Path, str]],
    skipped: dict[str, int],
    taught: TeacherRows,
    cfg: FitConfig,
    unlabelled: str | Path | None,
) -> tuple[Manifest, SoftTargets, dict[str, int]]:
    """The labelled images the teacher read (the others become problems) and the soft targets
    of the run."""
    n = len(manifest.samples)
    failed = {manifest.samples[i].path: why for i, why in taught.failures.items() if i < n}
    if failed:
        reasons = {p: f"the teacher could not read it: {why}" for p, why in failed.items()}
        manifest = manifest.without(reasons, reasons)
    rows = [(path, taught.rows[sha]) for path, sha in extra if sha in taught.rows]
    if extra and not rows:
        raise DataError(f"the teacher could read no image under {unlabelled}")
    if extra:
        skipped = {**skipped, "unreadable": skipped["unreadable"] + len(extra) - len(rows)}
    settings = Distillation(cfg.distill.temperature, cfg.distill.alpha)
    return manifest, SoftTargets(settings, taught.rows, rows), skipped


# -- the record -----------------------------------------------------------------------------
def _compare(result: FitResult, model: Model, soft: SoftTargets) -> dict[str, Any]:
    """Per evaluated split and task: the teacher's and the student's headline score on the
    same images, and their agreement (top-1 for a multi-class task, per-label decisions for a
    multi-label one)."""
    out: dict[str, Any] = {}
    thresholds = result.thresholds()
    for split, per_task in result.probabilities.items():
        samples = result.manifest.split(split)
        joined = np.stack([soft.rows[s.sha256] for s in samples])
        start = 0
        out[split] = {}
        for task in result.tasks:
            cols = slice(start, start + len(task.classes))
            start = cols.stop
            teacher_p, student_p = joined[:, cols], per_task[task.name]
            cells = [s.labels[task.name] for s in samples]
            th_t, th_s = model.thresholds(task), thresholds[task.name]
            name, teacher_score = headline(
                task_metrics(task, cells, teacher_p, thresholds=th_t, n_boot=0)
            )
            student_score = headline(result.metrics[split][task.name])[1]
            if task.multi_label:
                agree = float(np.mean((teacher_p >= th_t) == (student_p >= th_s)))
            else:
                agree = float(np.mean(teacher_p.argmax(1) == student_p.argmax(1)))
            out[split][task.name] = {
                "metric": name,
                "teacher": round(teacher_score.value, 6),
                "student": round(student_score.value, 6),
                "agreement": round(agree, 6),
            }
    return out


def _write_record(run: RunFolder, record: dict[str, Any]) -> None:
    if os.environ.get("LOCAL_RANK", "0") != "0":
        return  # DDP's other ranks: rank 0 writes
    atomic_write_text(run.path / DISTILL_JSON, json.dumps(record, indent=2) + "\n")
