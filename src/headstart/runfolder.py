"""The files of a run folder, written the same way by the probe and fine-tuning paths."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

from headstart.backbones import BackboneRef
from headstart.bundle import library_versions, write_bundle
from headstart.data import Manifest
from headstart.features import EmbeddingStore
from headstart.fsutil import atomic_write_text

if TYPE_CHECKING:
    from headstart.pipeline import FitResult

__all__ = ["portable_weights", "run_record", "write_predictions", "write_run"]


def write_predictions(path: Path, manifest: Manifest, probabilities: dict[str, np.ndarray]) -> None:
    """CSV of every evaluated image: path, split, true label, prediction, confidence, p:<class>."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        ["path", "split", "label", "predicted", "confidence", *(f"p:{c}" for c in manifest.classes)]
    )
    for split, proba in probabilities.items():
        for sample, row in zip(manifest.split(split), proba, strict=True):
            best = int(row.argmax())
            rel = manifest.relative(sample.path)
            cells = [f"{v:.6f}" for v in row]
            writer.writerow(
                [rel, split, sample.label, manifest.classes[best], f"{row[best]:.6f}", *cells]
            )
    atomic_write_text(path, buffer.getvalue())


def portable_weights(ref: BackboneRef, store: EmbeddingStore) -> Path:
    """The backbone's weights as a safetensors file of the module's own state dict, converted
    once per weights hash and cached, so bundles carry them without rebuilding the model."""
    if ref.weights_path is not None and ref.weights_path.suffix == ".safetensors":
        return ref.weights_path
    cached = store.root / "weights" / f"{ref.weights_sha256}.safetensors"
    if not cached.is_file():
        from headstart.backbones import save_weights

        save_weights(ref.build(), cached)
    return cached


def run_record(result: FitResult) -> dict[str, Any]:
    m = result.manifest
    return {
        "data": str(m.root),
        "data_hash": m.data_hash(),
        "split_source": m.split_source,
        "counts": {s: len(m.split(s)) for s in m.splits_present()},
        "problems": len(m.problems),
        "duplicate_groups": len(m.duplicates),
        "cross_split_duplicates": sum(g.cross_split for g in m.duplicates),
        "extraction": {
            "engine": result.extraction.engine,
            "cached": result.extraction.n_cached,
            "computed": result.extraction.n_computed,
            "seconds": round(result.extraction.seconds, 3),
        },
        "timings_s": {k: round(v, 3) for k, v in result.timings.items()},
        "versions": library_versions(),
        "near_duplicates": len(result.near_duplicates),
        "deduped": result.deduped,
        **({"backbone_ranking": result.ranking} if result.ranking is not None else {}),
    }


def write_run(result: FitResult, ref: BackboneRef) -> None:
    """Write the run folder: manifest, problems, near-duplicates, config, predictions, metrics,
    run.json and the bundle."""
    run_dir = result.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    m = result.manifest
    m.write_csv(run_dir / "manifest.csv")
    m.write_problems(run_dir / "problems.csv")
    if result.near_duplicates:
        from headstart.data.leakage import write_near_duplicates

        write_near_duplicates(run_dir / "near_duplicates.csv", m, result.near_duplicates)
    config = result.config.to_dict()
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    if m.is_plain:
        write_predictions(run_dir / "predictions.csv", m, result.probabilities)
        metrics: dict[str, Any] = {split: mt.to_dict() for split, mt in result.metrics.items()}
    else:
        from headstart.tasks.probe import write_task_predictions

        write_task_predictions(
            run_dir / "predictions.csv", m, result.head, result.task_probabilities
        )
        metrics = {
            split: {"tasks": {t: mt.to_dict() for t, mt in per_task.items()}}
            for split, per_task in result.task_metrics.items()
        }
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    run = run_record(result)
    atomic_write_text(run_dir / "run.json", json.dumps(run, indent=2) + "\n")
    write_bundle(
        result.bundle_dir,
        head=result.head,
        backbone=ref,
        backbone_weights=portable_weights(ref, EmbeddingStore(result.config.extract.cache_dir)),
        classes=m.classes,
        extra={"metrics": metrics, "config": config, "data_hash": run["data_hash"], "run": run},
        tasks=None if m.is_plain else list(m.targets),
    )
