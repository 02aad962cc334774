"""``headstart ensemble RUN_A RUN_B ... -o OUT``: one bundle from runs fitted on the same data.

Each run's bundle gives a member (its backbone, fine-tuned or not, and its heads as fitted).
Selection and stacking learn from out-of-fold probabilities of the training images: a probe
run's heads are refitted on folds of its cached embeddings (their parameters as the run chose
them); a fine-tuned run has none (its network saw every training image), so it can only vote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart.cache import CacheRoot
from headstart.data import Manifest
from headstart.embedding import embed_data, scan_data
from headstart.ensemble.assemble import ensemble_result
from headstart.ensemble.combine import combine
from headstart.ensemble.members import Member, layout
from headstart.errors import ConfigError, DataError
from headstart.heads.tfidf import is_words
from headstart.model import load
from headstart.probe import out_of_fold
from headstart.result import FitResult, write_result
from headstart.runfolder import RunFolder

__all__ = ["ensemble_runs"]


def _finetuned(run: RunFolder) -> bool:
    facts = run.read_finetune()
    # a distilled (or pruned) student is a fine-tuned network too: no out-of-fold predictions
    return facts is not None and (facts.chosen or facts.strategy) in ("finetune", "distill")


def ensemble_runs(
    run_dirs: Sequence[str | Path],
    output: str | Path,
    *,
    method: str = "select",
    overwrite: bool = False,
    progress: bool = True,
    cache: CacheRoot | None = None,
) -> FitResult:
    """Combine the models of ``run_dirs`` (same data, same splits) by ``method`` (vote,
    select or stack) and write the ensemble's run folder ``output`` (module docstring)."""
    if len(run_dirs) < 2:
        raise ConfigError("an ensemble needs at least two runs")
    runs = [RunFolder(p) for p in run_dirs]
    out = RunFolder(output)
    for run in runs:
        if not run.bundle.is_dir():
            raise ConfigError(f"{run.path} holds no model (no {run.bundle.name}/ folder)")
        if run.path.resolve() == out.path.resolve():
            raise ConfigError(f"-o {output} is one of the runs to ensemble; choose another folder")
    records = [run.read_run() for run in runs]
    if any(r is None for r in records):
        bad = next(run.path for run, r in zip(runs, records, strict=True) if r is None)
        raise ConfigError(f"{bad} has no run.json: not a run folder written by headstart fit")
    first = records[0]
    assert first is not None  # checked above
    for run, record in zip(runs[1:], records[1:], strict=True):
        if record is not None and record.data_hash != first.data_hash:
            raise ConfigError(
                f"{run.path} was fitted on other data or other splits than {runs[0].path}; "
                "ensemble runs of the same data"
            )
    out.check_output(overwrite)
    cfg = runs[0].read_config()
    tuned = [_finetuned(run) for run in runs]
    manifest = scan_data(first.source or first.data, cfg, carve_val=any(tuned))
    if manifest.data_hash() != first.data_hash:
        raise DataError(
            f"{first.data} changed since {runs[0].path} was fitted (its images or splits "
            "differ); fit the runs again"
        )
    cache = cache or CacheRoot.for_config(cfg)
    held = next((s for s in ("test", "val") if s in manifest.splits_present()), None)
    rows = [i for i, s in enumerate(manifest.samples) if s.split != held]
    members: list[Member] = []
    features: dict[str, np.ndarray] = {}
    with out.lock():
        for run, is_tuned in zip(runs, tuned, strict=True):
            model = load(run.bundle, cache=cache)
            if is_words(model.backbone_ref):
                raise ConfigError(
                    f"{run.path} is a TF-IDF run: its features are the texts, not embeddings "
                    "an ensemble can share; ensemble the encoders' probe runs"
                )
            got = embed_data(manifest, cfg, progress=progress, ref=model.backbone_ref)
            if len(got.manifest.samples) != len(manifest.samples):
                raise DataError(f"some images of {first.data} no longer decode; fit again")
            at = 0
            for part in model.backbone_ref.members:
                width = int(part.feature_dim or got.features.shape[1])
                features[part.weights_sha256] = got.features[:, at : at + width]
                at += width
            oof = None if is_tuned else _oof(model.heads, got.features, manifest, rows)
            kind = "finetune" if is_tuned else "probe"
            name = run.path.name
            members.append(Member(name, model.backbone_ref, dict(model.heads), oof, 0.0, kind))
        ref, slices = layout(members)
        combined = combine(members, slices, method, manifest, rows)
        result = ensemble_result(
            out.path, manifest, rows, held, members, ref, combined, features, cfg,
            extra={"runs": [str(run.path) for run in runs]},
        )  # fmt: skip
        write_result(result)
    return result


def _oof(
    heads: dict[str, Any], X: np.ndarray, manifest: Manifest, rows: list[int]
) -> dict[str, np.ndarray]:
    """Each task's out-of-fold probabilities of the training ``rows`` from refits of the
    run's head on folds of them (the probe's folds)."""
    out = {}
    for task in manifest.targets:
        cells = [tuple(manifest.samples[i].labels[task.name]) for i in rows]
        proba = out_of_fold(task, heads[task.name], X[rows], cells)
        if proba is None:
            raise ConfigError(
                f"too few training images per class of '{task.name}' for out-of-fold "
                "predictions; use --method vote"
            )
        out[task.name] = proba
    return out
