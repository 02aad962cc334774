"""The probe: one head per task on cached embeddings, thresholds of multi-label heads tuned on
validation, probabilities and metrics on every held-out split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from headstart.cache import CacheRoot
from headstart.config import FitConfig
from headstart.embedding import EmbeddedData
from headstart.heads import check_label_coverage, task_head, task_proba, task_target
from headstart.heads.cache import fit_cached
from headstart.result import score_splits
from headstart.runfolder import MetricsRecord

__all__ = ["ProbeOutcome", "fit_heads", "held_out_proba", "probe"]

EVALUATED = ("val", "test")


@dataclass
class ProbeOutcome:
    """The fitted heads, and per held-out split and task the probabilities and metrics."""

    heads: dict[str, Any]
    probabilities: dict[str, dict[str, np.ndarray]]
    metrics: MetricsRecord


def fit_heads(
    embedded: EmbeddedData, cfg: FitConfig, rows: list[int], cache: CacheRoot | None
) -> dict[str, Any]:
    """One head per task (``head.kind``/``head.params``) fitted on the samples ``rows``;
    fitted heads are cached under ``cache`` (None: not cached)."""
    samples = [embedded.manifest.samples[i] for i in rows]
    X = embedded.features[rows]
    heads = {}
    for task in embedded.manifest.targets:
        cells = [s.labels[task.name] for s in samples]
        check_label_coverage(task, cells)
        head = task_head(task, cfg.head.kind, cfg.head.params)
        folder = cache.heads if cache is not None else None
        heads[task.name] = fit_cached(head, X, task_target(task, cells), folder)
    return heads


def held_out_proba(
    embedded: EmbeddedData, heads: dict[str, Any], splits: tuple[str, ...] = EVALUATED
) -> dict[str, dict[str, np.ndarray]]:
    """Each task's probabilities on each of ``splits`` that has samples."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for split in splits:
        rows = embedded.rows(split)
        if rows:
            out[split] = {
                t.name: task_proba(t, heads[t.name], embedded.features[rows])
                for t in embedded.manifest.targets
            }
    return out


def probe(embedded: EmbeddedData, cfg: FitConfig, cache: CacheRoot | None) -> ProbeOutcome:
    """Fit every task's head on the train split and score it on val and test."""
    heads = fit_heads(embedded, cfg, embedded.rows("train"), cache)
    probabilities = held_out_proba(embedded, heads)
    metrics = score_splits(
        embedded.manifest, heads, probabilities, n_boot=cfg.eval.n_boot, seed=cfg.data.seed
    )
    return ProbeOutcome(heads, probabilities, metrics)
