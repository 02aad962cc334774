"""``fit --strategy tfidf``: the TF-IDF baseline for text as a real model.

The bundle's backbone is :func:`headstart.heads.tfidf.words_ref` (no network, no weights: the
"features" are the texts) and each task's head a :class:`~headstart.heads.tfidf.TfidfHead`
(vocabularies, idf and coefficients as arrays in head.safetensors, verified by its sha256 like
every head).  The rest is the probe's (:func:`headstart.probe.probe`): heads fitted on every
split but the held-out one, 3-fold out-of-fold validation that also fits the temperature,
metrics with bootstrap intervals, predictions.csv, the report.  No embedding cache, no
near-duplicate check and no OOD scorer: those read embeddings.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from headstart.config import FitConfig
from headstart.data import Manifest
from headstart.embedding import EmbeddedData, check_trainable, scan_data
from headstart.errors import ConfigError
from headstart.features import Extraction
from headstart.heads import check_label_coverage
from headstart.heads.tfidf import WORDS, words_ref
from headstart.probe import probe
from headstart.result import FitResult, write_result
from headstart.runfolder import RunFolder

__all__ = ["fit_tfidf"]


def fit_tfidf(
    data: str | Path | Manifest, run: RunFolder, cfg: FitConfig, *, overwrite: bool
) -> FitResult:
    """Scan the text data, fit a TF-IDF head per task (module doc) and write the run."""
    run.check_output(overwrite)
    if cfg.head.kind not in ("logistic", WORDS) or cfg.head.params:
        raise ConfigError(
            f"--strategy tfidf fits its own head; drop head.kind={cfg.head.kind} and head.params"
        )
    cfg = cfg.model_copy(update={"head": cfg.head.model_copy(update={"kind": WORDS})})
    t0 = time.perf_counter()
    manifest = data if isinstance(data, Manifest) else scan_data(data, cfg, carve_val=False)
    if manifest.modality != "text":
        raise ConfigError(
            f"--strategy tfidf reads texts; {manifest.source or manifest.root} holds images "
            "(text data: a CSV with --text-column, or class folders of .txt files)"
        )
    check_trainable(manifest)
    for task in manifest.targets:
        check_label_coverage(task, [s.labels[task.name] for s in manifest.split("train")])
    texts = np.asarray(manifest.texts, dtype=object).reshape(-1, 1)
    embedded = EmbeddedData(manifest, texts, words_ref(), Extraction(texts, engine=WORDS))
    scanned = time.perf_counter() - t0
    t0 = time.perf_counter()
    outcome = probe(embedded, cfg, cache=None)
    result = FitResult(
        run.path,
        manifest,
        outcome.heads,
        embedded.backbone,
        cfg,
        metrics=outcome.metrics,
        probabilities=outcome.probabilities,
        trained_on=outcome.trained_on,
        timings={"scan": scanned, "head": time.perf_counter() - t0},
        validation=outcome.validation,
        calibration=outcome.calibration,
    )
    t0 = time.perf_counter()
    write_result(result)
    result.timings["write"] = time.perf_counter() - t0
    return result
