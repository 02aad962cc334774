"""What a fit produced (:class:`FitResult`), the same for the probe and fine-tuning, and the one
function that writes it as a run folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import BackboneRef
from headstart.bundle import library_versions, write_bundle
from headstart.cache import CacheRoot, portable_weights
from headstart.config import FitConfig
from headstart.data import Manifest, Task
from headstart.data.leakage import NearDuplicate
from headstart.features import Extraction
from headstart.heads import OodScorer, indicator, thresholds_of, tune_thresholds
from headstart.heads.tfidf import is_words
from headstart.model import Model, load
from headstart.runfolder import (
    FinetuneRecord,
    MetricsRecord,
    Probabilities,
    RunFolder,
    RunRecord,
)
from headstart.stats import task_metrics

__all__ = ["FitResult", "score_splits", "write_result"]

"""split -> task -> (N, C) probabilities, rows following the split's samples."""


def score_splits(
    manifest: Manifest,
    heads: dict[str, Any],
    probabilities: Probabilities,
    *,
    n_boot: int,
    seed: int,
) -> MetricsRecord:
    """Metrics of every task on every split of ``probabilities``; each multi-label head's
    thresholds are first tuned on ``val`` (F1-best per label) when it is there."""
    if "val" in probabilities:
        val = manifest.split("val")
        for task in manifest.targets:
            if task.multi_label:
                Y = indicator([s.labels[task.name] for s in val], task.classes)
                heads[task.name].thresholds_ = tune_thresholds(Y, probabilities["val"][task.name])
    return {
        split: {
            t.name: task_metrics(
                t,
                [s.labels[t.name] for s in manifest.split(split)],
                per_task[t.name],
                thresholds=thresholds_of(t, heads[t.name]),
                n_boot=n_boot,
                seed=seed,
            )
            for t in manifest.targets
        }
        for split, per_task in probabilities.items()
    }


@dataclass
class FitResult:
    """A fitted model before and after it is written: its data, heads, numbers and files."""

    run_dir: Path
    manifest: Manifest
    heads: dict[str, Any]
    """The fitted head of each task, by name."""
    backbone: BackboneRef
    """The backbone the bundle carries (for fine-tuning: the trained weights)."""
    config: FitConfig
    metrics: MetricsRecord = field(default_factory=dict)
    """split -> task -> metrics (``val``/``test``; ``cv`` for cross-validated scores)."""
    probabilities: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """split -> task -> (N, C) probabilities in manifest order; columns follow the classes."""
    extraction: Extraction | None = None
    trained_on: int = 0
    """How many images the heads (or the network) were trained on."""
    timings: dict[str, float] = field(default_factory=dict)
    weights: Path | None = None
    """The safetensors file of the backbone to bundle (None: convert the registry's weights)."""
    validation: str = ""
    """How the validation numbers were obtained, in words (run.json)."""
    calibration: dict[str, Any] | None = None
    """The bundle's calibration record (the probe's temperatures), when there is one."""
    finetune: FinetuneRecord | None = None
    report: Path | None = None
    """The run's HTML report (``RUN/report.html``), when one was written."""
    near_duplicates: list[NearDuplicate] = field(default_factory=list)
    """Cross-split near-duplicate pairs."""
    deduped: int = 0
    """Images removed by ``data.dedupe``."""
    label_issues_dropped: int = 0
    """Training images left out by ``data.drop_label_issues``."""
    ranking: dict[str, Any] | None = None
    """The backbone ranking when ``backbone.name`` was ``auto``."""
    ensemble: dict[str, Any] | None = None
    """An ensemble's record (method, members' leaderboard; a preset's steps), ``ensemble.json``."""
    distill: dict[str, Any] | None = None
    """A distillation's record (teacher, temperature, alpha, images, scores), ``distill.json``."""
    ood: OodScorer | None = None
    """The out-of-distribution scorer the bundle carries (training embeddings of the bundled
    backbone, threshold on held-out in-distribution scores)."""
    semi_supervised: dict[str, Any] | None = None
    """With unlabelled images: their counts and, per task, the method chosen, the candidates'
    CV scores, the pseudo-labels used and their accuracy on held-out labelled images."""

    @property
    def tasks(self) -> tuple[Task, ...]:
        return self.manifest.targets

    @property
    def bundle_dir(self) -> Path:
        return RunFolder(self.run_dir).bundle

    @property
    def model(self) -> Model:
        """The written bundle, loaded (embeddings cached under the config's cache root)."""
        return load(self.bundle_dir, cache=CacheRoot.for_config(self.config))

    def thresholds(self) -> dict[str, np.ndarray | None]:
        """Each task's decision thresholds (multi-label; None for multi-class)."""
        return {t.name: thresholds_of(t, self.heads[t.name]) for t in self.tasks}


def _run_record(result: FitResult) -> RunRecord:
    m = result.manifest
    ex = result.extraction
    return RunRecord(
        data=str(m.root),
        source=str(m.source or m.root),
        data_hash=m.data_hash(),
        split_source=m.split_source,
        counts={s: len(m.split(s)) for s in m.splits_present()},
        problems=len(m.problems),
        duplicate_groups=len(m.duplicates),
        cross_split_duplicates=sum(g.cross_split for g in m.duplicates),
        extraction={}
        if ex is None
        else {
            "engine": ex.engine,
            "cached": ex.n_cached,
            "computed": ex.n_computed,
            "seconds": round(ex.seconds, 3),
        },
        timings_s={k: round(v, 3) for k, v in result.timings.items()},
        versions=library_versions(),
        near_duplicates=len(result.near_duplicates),
        deduped=result.deduped,
        label_issues_dropped=result.label_issues_dropped,
        validation=result.validation,
        backbone_ranking=result.ranking,
        semi_supervised=result.semi_supervised,
    )


def write_result(result: FitResult) -> None:
    """Write the run folder: data files, config, predictions, metrics, run.json, finetune.json
    (fine-tuning) and the bundle."""
    folder = RunFolder(result.run_dir)
    with folder.staged() as run:
        _write_files(result, run)
    # an earlier ensemble's or distillation's record must not describe this model
    if result.ensemble is None:
        (folder.path / "ensemble.json").unlink(missing_ok=True)
    if result.distill is None:
        (folder.path / "distill.json").unlink(missing_ok=True)


def _write_files(result: FitResult, run: RunFolder) -> None:
    m = result.manifest
    run.write_data(m, result.near_duplicates)
    run.write_config(result.config)
    run.write_predictions(m, result.probabilities, result.thresholds())
    metrics = run.write_metrics(result.metrics)
    record = _run_record(result)
    run.write_run(record)
    if result.finetune is not None:
        run.write_finetune(result.finetune)
    if result.ensemble is not None:
        run.write_ensemble(result.ensemble)
    if result.distill is not None:
        run.write_distill(result.distill)
    weights: Path | tuple[Path, ...] | None = result.weights
    if weights is None and not is_words(result.backbone):  # TF-IDF has no weights
        weights = portable_weights(result.backbone, CacheRoot.for_config(result.config))
    extra = {
        "metrics": metrics,
        "config": result.config.to_dict(),
        "data_hash": record.data_hash,
        "run": record.to_dict(),
        **({"calibration": result.calibration} if result.calibration else {}),
    }
    write_bundle(
        run.bundle,
        tasks=list(m.targets),
        heads=result.heads,
        backbone=result.backbone,
        backbone_weights=weights,
        extra=extra,
        ood=result.ood,
    )
