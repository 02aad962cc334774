"""An ensemble written as a run: the combined heads on the fused embeddings of every member's
backbone, calibrated and scored like a probe, with a leaderboard of the members beside it
(out-of-fold scores, held-out scores and paired tests against the ensemble)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import BackboneRef
from headstart.config import FitConfig
from headstart.data import Manifest, Task
from headstart.data.manifest import predicted_labels
from headstart.ensemble.combine import Combined
from headstart.ensemble.members import Member
from headstart.heads import fit_ood, indicator, task_proba, thresholds_of, tune_thresholds
from headstart.probe import CV_FOLDS
from headstart.result import FitResult
from headstart.runfolder import MetricsRecord
from headstart.stats import headline, task_metrics
from headstart.stats.paired import compare_predictions
from headstart.stats.temperature import (
    apply_calibration,
    fit_calibration,
    read_temperatures,
    temperature_entry,
)

__all__ = ["ensemble_result", "fused_features"]


def fused_features(ref: BackboneRef, part_features: Mapping[str, np.ndarray]) -> np.ndarray:
    """The fused embeddings of ``ref``: each part's rows (by weights digest), concatenated."""
    return np.hstack([part_features[p.weights_sha256] for p in ref.members])


def _labels(task: Task, manifest: Manifest, rows: Sequence[int]) -> list[str]:
    return [manifest.samples[i].labels[task.name][0] for i in rows]


def _score(task: Task, cells: list[tuple[str, ...]], proba: np.ndarray) -> float:
    return float(headline(task_metrics(task, cells, proba, n_boot=0))[1].value)


def _leaderboard(
    members: Sequence[Member],
    combined: Combined,
    manifest: Manifest,
    rows: list[int],
    held: str | None,
    member_held: list[dict[str, np.ndarray]],
    ensemble_held: dict[str, np.ndarray],
    seed: int,
) -> list[dict[str, Any]]:
    """One record per member and one for the ensemble: out-of-fold (``cv``) and held-out
    scores per task, a member's weight, and its paired test against the ensemble."""
    held_rows = manifest.rows(held) if held else []
    board: list[dict[str, Any]] = []
    entries: list[tuple[str, str, dict[str, np.ndarray] | None, dict[str, np.ndarray]]] = [
        (m.name, m.kind, m.oof, member_held[i]) for i, m in enumerate(members)
    ]
    entries.append((f"ensemble ({combined.method})", "ensemble", combined.oof, ensemble_held))
    for i, (name, kind, oof, on_held) in enumerate(entries):
        record: dict[str, Any] = {"name": name, "kind": kind, "tasks": {}}
        if i < len(members):
            record["backbone"] = members[i].ref.name
            record["seconds"] = round(members[i].seconds, 3)
        for task in manifest.targets:
            entry: dict[str, Any] = {}
            if oof is not None and task.name in oof:
                cells = [tuple(manifest.samples[r].labels[task.name]) for r in rows]
                entry["cv"] = _score(task, cells, oof[task.name])
            if held and held_rows:
                cells = [tuple(manifest.samples[r].labels[task.name]) for r in held_rows]
                entry[held] = _score(task, cells, on_held[task.name])
                if i < len(members):
                    truth = _labels(task, manifest, held_rows)
                    pred = [predicted_labels(task, p, None)[0] for p in on_held[task.name]]
                    ens = [predicted_labels(task, p, None)[0] for p in ensemble_held[task.name]]
                    paired = compare_predictions(
                        truth, pred, ens, list(task.classes), n_boot=1000, seed=seed, task=task.name
                    )
                    entry["vs_ensemble"] = {
                        "diff": paired.diff.value,
                        "ci": [paired.diff.low, paired.diff.high],
                        "p_value": paired.p_value,
                        "verdict": paired.verdict,
                    }
            if i < len(members) and task.name in combined.weights:
                entry["weight"] = combined.weights[task.name][i]
            record["tasks"][task.name] = entry
        board.append(record)
    return board


def ensemble_result(
    run_dir: Path,
    manifest: Manifest,
    rows: list[int],
    held: str | None,
    members: Sequence[Member],
    ref: BackboneRef,
    combined: Combined,
    part_features: Mapping[str, np.ndarray],
    cfg: FitConfig,
    *,
    timings: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> FitResult:
    """The :class:`FitResult` of an ensemble (not yet written): its heads on the fused
    embeddings of ``ref``, calibrated on its honest out-of-fold probabilities, scored on the
    held-out split, its OOD scorer on the training embeddings, and the leaderboard."""
    X = fused_features(ref, part_features)
    n_boot, seed = cfg.eval.n_boot, cfg.data.seed
    temperatures: dict[str, Any] = {}
    metrics: MetricsRecord = {}
    train_cells = {
        t.name: [tuple(manifest.samples[i].labels[t.name]) for i in rows] for t in manifest.targets
    }
    if len(combined.oof) == len(manifest.targets):
        cv = {}
        for task in manifest.targets:
            cells = train_cells[task.name]
            if task.multi_label:  # only a single candidate (ensembles are multi-class)
                truth = indicator(cells, task.classes)
            else:
                truth = np.array([task.classes.index(c[0]) for c in cells])
            temperature = fit_calibration(combined.oof[task.name], truth, task.multi_label)
            temperatures[task.name] = temperature_entry(temperature)
            calibrated = apply_calibration(combined.oof[task.name], temperature)
            head = combined.heads[task.name]
            if task.multi_label:  # thresholds on the calibrated out-of-fold probabilities
                head.thresholds_ = tune_thresholds(truth, calibrated)
            cv[task.name] = task_metrics(
                task, cells, calibrated, thresholds=thresholds_of(task, head), n_boot=n_boot,
                seed=seed,
            )  # fmt: skip
        metrics["cv"] = cv
    probabilities: dict[str, dict[str, np.ndarray]] = {}
    ensemble_held: dict[str, np.ndarray] = {}
    member_held: list[dict[str, np.ndarray]] = [{} for _ in members]
    if held is not None:
        held_rows = manifest.rows(held)
        member_X = [fused_features(m.ref, part_features)[held_rows] for m in members]
        for task in manifest.targets:
            raw = task_proba(task, combined.heads[task.name], X[held_rows])
            ensemble_held[task.name] = raw
            stored = read_temperatures(temperatures).get(task.name)
            proba = apply_calibration(raw, stored)
            probabilities.setdefault(held, {})[task.name] = proba
            for i, member in enumerate(members):
                member_held[i][task.name] = task_proba(task, member.heads[task.name], member_X[i])
        metrics[held] = {
            t.name: task_metrics(
                t, [tuple(s.labels[t.name]) for s in manifest.split(held)],
                probabilities[held][t.name], thresholds=thresholds_of(t, combined.heads[t.name]),
                n_boot=n_boot, seed=seed,
            )
            for t in manifest.targets
        }  # fmt: skip
    board = (
        []
        if combined.method == "single"
        else _leaderboard(members, combined, manifest, rows, held, member_held, ensemble_held, seed)
    )
    calibration = (
        {
            "method": "temperature",
            "fitted_on": "out-of-fold probabilities of the ensemble on the training images",
            "tasks": temperatures,
        }
        if temperatures
        else None
    )
    validation = (
        f"out-of-fold probabilities of the training images: members {CV_FOLDS}-fold, the "
        f"{combined.method} combination scored by an outer cross-validation"
        if "cv" in metrics
        else "none: a member cannot give out-of-fold predictions"
    )
    record = {"method": combined.method, "members": board, **(extra or {})}
    return FitResult(
        run_dir,
        manifest,
        dict(combined.heads),
        ref,
        cfg.model_copy(update={"backbone": cfg.backbone.model_copy(update={"name": ref.name})}),
        metrics=metrics,
        probabilities=probabilities,
        trained_on=len(rows),
        timings=dict(timings or {}),
        validation=validation,
        calibration=calibration,
        ood=fit_ood(X[rows], seed=seed, noun=manifest.noun),
        ensemble=record,
    )
