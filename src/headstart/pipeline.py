"""``fit``: image folder or CSV → manifest → cached embeddings → head → evaluated bundle."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import BackboneRef, resolve_backbone
from headstart.config import FitConfig, load_config
from headstart.data import Manifest, scan
from headstart.errors import ConfigError, DataError
from headstart.evaluate import Metrics, evaluate_predictions
from headstart.features import EmbeddingStore, Extraction, extract
from headstart.heads import create_head
from headstart.heads.cache import fit_head_cached
from headstart.model import Model, load
from headstart.runfolder import write_run

__all__ = [
    "EmbeddedData",
    "FitResult",
    "embed_data",
    "fit",
    "resume",
    "scan_data",
]


@dataclass
class FitResult:
    """What a fit produced: where it wrote things, the numbers, and how long each step took."""

    run_dir: Path
    bundle_dir: Path
    manifest: Manifest
    metrics: dict[str, Metrics]
    extraction: Extraction
    head: Any
    timings: dict[str, float] = field(default_factory=dict)
    config: FitConfig = field(default_factory=FitConfig)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    """Per evaluated split, (N, C) probabilities in manifest order; columns follow the classes."""
    report: Path | None = None
    """The run's HTML report (``RUN/report.html``), when ``fit(report=True)`` wrote one."""
    near_duplicates: list[Any] = field(default_factory=list)
    """Cross-split near-duplicate pairs (:class:`headstart.data.leakage.NearDuplicate`)."""
    deduped: int = 0
    """Images removed by ``data.dedupe``."""
    ranking: dict[str, Any] | None = None
    """The backbone ranking when ``backbone.name`` was ``auto``."""
    task_metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Multi-label / multi-task data: split -> task -> metrics (``metrics`` is then empty)."""
    task_probabilities: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """Multi-label / multi-task data: split -> task -> probabilities (columns: task classes)."""

    @property
    def model(self) -> Model:
        return load(self.bundle_dir)


def _check_output(run_dir: Path, overwrite: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"output {run_dir} exists and is not a folder")
    if (run_dir / "model").exists() and not overwrite:
        raise ConfigError(
            f"{run_dir} already holds a model; pass --overwrite to replace it, or choose another -o"
        )


def _drop_unreadable(manifest: Manifest, extraction: Extraction) -> Manifest:
    if not extraction.failures:
        return manifest
    reasons = {manifest.samples[i].path: r for i, r in extraction.failures.items()}
    return manifest.without(reasons, reasons)


def _check_trainable(manifest: Manifest) -> None:
    for task in manifest.targets:
        counts = Counter(x for s in manifest.split("train") for x in s.labels[task.name])
        empty = [c for c in task.classes if counts[c] == 0]
        if empty:
            where = "" if manifest.is_plain else f" of '{task.name}'"
            raise DataError(
                f"class {', '.join(repr(c) for c in empty)}{where} has no usable training "
                "image; add images or remove the class"
            )


def _proba_in_class_order(head: Any, features: np.ndarray, classes: list[str]) -> np.ndarray:
    raw = head.predict_proba(features)
    order = [list(head.classes_).index(c) for c in classes]
    return np.asarray(raw[:, order], dtype=np.float64)


@dataclass
class EmbeddedData:
    """A scanned data set with one embedding per usable sample (rows follow manifest.samples)."""

    manifest: Manifest
    features: np.ndarray
    backbone: BackboneRef
    extraction: Extraction

    def split(self, name: str) -> tuple[np.ndarray, list[str]]:
        """Features and labels of one split (plain data: one task, one label per image)."""
        require_plain(self.manifest)
        rows = [i for i, s in enumerate(self.manifest.samples) if s.split == name]
        return self.features[rows], [self.manifest.samples[i].label for i in rows]


def require_plain(manifest: Manifest, what: str = "this command") -> None:
    """Raise a one-line error when multi-label or multi-task data reaches code for plain data."""
    if manifest.is_plain:
        return
    kinds = ", ".join(
        f"{t.name} ({'multi-label' if t.multi_label else 'multi-class'})" for t in manifest.targets
    )
    raise ConfigError(
        f"{what} supports one label column with one label per image; this data has {kinds} "
        "(fit, evaluate and predict support it)"
    )


def scan_data(data: str | Path, config: FitConfig) -> Manifest:
    """Scan ``data`` with the config's split rules, seed, pixel limit and label column."""
    d = config.data
    return scan(
        data,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=d.seed,
        max_pixels=d.max_pixels,
        label_column=d.label_column,
    )


def _check_pretrained(cfg: FitConfig) -> None:
    if not cfg.backbone.pretrained:
        raise ConfigError(
            "backbone.pretrained=false: a randomly initialised backbone gives meaningless "
            "embeddings; train it from scratch with --strategy finetune"
        )


def embed_data(
    data: str | Path | Manifest,
    config: FitConfig | None = None,
    *,
    progress: bool = True,
    ref: BackboneRef | None = None,
    plain_for: str | None = None,
) -> EmbeddedData:
    """Scan ``data`` (unless it is a scanned manifest) and embed every usable image with the
    configured backbone (cached).  Files that fail to decode become problems of the manifest;
    every class must keep a training image.  ``plain_for``: the command's name, when it only
    supports plain data (one label column, one label per image): other data fails at once."""
    cfg = config or load_config()
    _check_pretrained(cfg)
    ref = ref or resolve_backbone(cfg.backbone.name, cfg.backbone.weights)
    manifest = data if isinstance(data, Manifest) else scan_data(data, cfg)
    if plain_for is not None:
        require_plain(manifest, plain_for)
    extraction = extract(
        [s.path for s in manifest.samples],
        [s.sha256 for s in manifest.samples],
        ref,
        store=EmbeddingStore(cfg.extract.cache_dir),
        engine=cfg.extract.engine,
        batch_size=cfg.extract.batch_size,
        workers=cfg.extract.workers,
        progress=progress,
    )
    keep = [i for i in range(len(manifest.samples)) if i not in extraction.failures]
    manifest = _drop_unreadable(manifest, extraction)
    _check_trainable(manifest)
    return EmbeddedData(manifest, extraction.features[keep], ref, extraction)


def fit(
    data: str | Path,
    output: str | Path,
    *,
    config: FitConfig | None = None,
    overwrite: bool = False,
    progress: bool = True,
    report: bool = True,
    strategy: str | None = None,
) -> FitResult:
    """Fit a classifier on the images in ``data`` (class folders or a CSV) and write the run
    folder ``output`` (bundle in ``output/model``, manifest, problems, config, metrics, and with
    ``report`` the HTML report ``output/report.html``).  ``strategy`` (default
    ``config.strategy.kind``): ``probe`` (head on cached embeddings), ``finetune`` (Lightning,
    see :mod:`headstart.finetune`) or ``auto`` (probe first, fine-tune when it pays)."""
    cfg = config or load_config()
    kind = strategy or cfg.strategy.kind
    if kind != "probe":
        from headstart.finetune import fit_with_strategy

        tuned = fit_with_strategy(data, output, cfg, kind, overwrite=overwrite, progress=progress)
        return _with_report(tuned, report)
    run_dir = Path(output)
    _check_output(run_dir, overwrite)
    # fail fast on a bad head or backbone, before any scanning or extraction
    head = create_head(cfg.head.kind, **cfg.head.params)
    _check_pretrained(cfg)
    cfg, ranking = _resolve_auto_backbone(data, cfg, progress)
    ref = resolve_backbone(cfg.backbone.name, cfg.backbone.weights)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    embedded = embed_data(data, cfg, progress=progress, ref=ref)
    timings["embed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    embedded, near, deduped = _check_leakage(embedded, cfg)
    manifest = embedded.manifest
    timings["leakage"] = time.perf_counter() - t0
    if not manifest.is_plain:
        result = _fit_tasks(embedded, cfg, run_dir, timings)
        result.near_duplicates, result.deduped, result.ranking = near, deduped, ranking
        return _written(result, ref, report)

    t0 = time.perf_counter()
    cache_root = EmbeddingStore(cfg.extract.cache_dir).root
    head = fit_head_cached(
        head, cfg.head.kind, cfg.head.params, *embedded.split("train"), cache_root
    )
    timings["head"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    metrics = {}
    probabilities: dict[str, np.ndarray] = {}
    for split in ("val", "test"):
        features, labels = embedded.split(split)
        if labels:
            proba = _proba_in_class_order(head, features, manifest.classes)
            probabilities[split] = proba
            metrics[split] = evaluate_predictions(
                labels,
                [manifest.classes[j] for j in proba.argmax(axis=1)],
                manifest.classes,
                n_boot=cfg.eval.n_boot,
                seed=cfg.data.seed,
                proba=proba,
            )
    timings["evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    result = FitResult(
        run_dir,
        run_dir / "model",
        manifest,
        metrics,
        embedded.extraction,
        head,
        timings,
        cfg,
        probabilities,
    )
    result.near_duplicates, result.deduped, result.ranking = near, deduped, ranking
    return _written(result, ref, report)


def _written(result: FitResult, ref: BackboneRef, report: bool) -> FitResult:
    t0 = time.perf_counter()
    write_run(result, ref)
    result.timings["write"] = time.perf_counter() - t0
    return _with_report(result, report)


def _fit_tasks(
    embedded: EmbeddedData, cfg: FitConfig, run_dir: Path, timings: dict[str, float]
) -> FitResult:
    """Multi-label / multi-task data: a head per task, thresholds tuned on val, metrics."""
    from headstart.tasks.probe import (
        evaluate_tasks,
        fit_task_heads,
        task_probabilities,
        tune_label_thresholds,
    )

    manifest, features = embedded.manifest, embedded.features
    t0 = time.perf_counter()
    heads = fit_task_heads(manifest, features, cfg.head.kind, cfg.head.params)
    timings["head"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probabilities = task_probabilities(manifest, features, heads)
    tune_label_thresholds(manifest, heads, probabilities)
    metrics = evaluate_tasks(
        manifest, heads, probabilities, n_boot=cfg.eval.n_boot, seed=cfg.data.seed
    )
    timings["evaluate"] = time.perf_counter() - t0
    result = FitResult(
        run_dir, run_dir / "model", manifest, {}, embedded.extraction, heads, timings, cfg
    )
    result.task_metrics, result.task_probabilities = metrics, probabilities
    return result


def _with_report(result: FitResult, report: bool) -> FitResult:
    if report:
        from headstart.report import build_report

        t0 = time.perf_counter()
        result.report = build_report(result.run_dir)
        result.timings["report"] = time.perf_counter() - t0
    return result


def resume(run_dir: str | Path, *, progress: bool = True, report: bool = True) -> FitResult:
    """Continue a killed fine-tuning run from its last checkpoint (same data, config, seed)."""
    from headstart.finetune import resume_run

    return _with_report(resume_run(run_dir, progress=progress), report)


def _resolve_auto_backbone(
    data: str | Path, cfg: FitConfig, progress: bool
) -> tuple[FitConfig, dict[str, Any] | None]:
    """``backbone.name: auto`` -> the backbone :func:`rank_backbones` chooses."""
    if cfg.backbone.name != "auto":
        return cfg, None
    from headstart.evaluate.ranking import rank_backbones

    ranking = rank_backbones(data, cfg, progress=progress)
    backbone = cfg.backbone.model_copy(update={"name": ranking.chosen})
    return cfg.model_copy(update={"backbone": backbone}), ranking.to_dict()


def _check_leakage(embedded: EmbeddedData, cfg: FitConfig) -> tuple[EmbeddedData, list[Any], int]:
    """Cross-split near-duplicates, and with ``data.dedupe`` the data without them."""
    from headstart.data.leakage import dedupe, find_near_duplicates

    near = find_near_duplicates(embedded, cfg.data.near_duplicate_threshold)
    if not cfg.data.dedupe:
        return embedded, near, 0
    reduced, removed = dedupe(embedded, near)
    _check_trainable(reduced.manifest)
    return reduced, near, removed
