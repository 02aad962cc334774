"""Reading a run folder (what ``headstart fit`` wrote) into one object the report draws from."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.errors import DataError, PathNotFoundError

__all__ = ["RunFiles", "read_run"]

_REQUIRED = ("model/model.json", "metrics.json", "manifest.csv", "run.json")


@dataclass
class RunFiles:
    """The parsed files of one run folder.  CSV files are lists of row dicts."""

    run_dir: Path
    info: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    run: dict[str, Any]
    manifest: list[dict[str, str]]
    problems: list[dict[str, str]] = field(default_factory=list)
    predictions: list[dict[str, str]] = field(default_factory=list)
    config_text: str = ""
    curves: list[dict[str, str]] | None = None

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.info["classes"]]

    @property
    def data_root(self) -> Path:
        """The data folder the run was fitted on; manifest and prediction paths are under it."""
        return Path(str(self.run.get("data", "")))

    def image_path(self, rel: str) -> Path:
        path = Path(rel)
        return path if path.is_absolute() else self.data_root / path

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per split and class, from the manifest (splits in train/val/test order)."""
        per: dict[str, Counter[str]] = defaultdict(Counter)
        for row in self.manifest:
            per[row["split"]][row.get("label", "")] += 1
        order = [s for s in ("train", "val", "test") if s in per] + sorted(
            s for s in per if s not in ("train", "val", "test")
        )
        return {s: dict(per[s]) for s in order}

    def probabilities(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(N, C) probabilities and true class indices of one split from predictions.csv."""
        classes = self.classes
        index = {c: i for i, c in enumerate(classes)}
        rows = [r for r in self.predictions if r["split"] == split and r["label"] in index]
        proba = np.array(
            [[float(r.get(f"p:{c}") or "nan") for c in classes] for r in rows], dtype=np.float64
        ).reshape(len(rows), len(classes))
        return proba, np.array([index[r["label"]] for r in rows], dtype=np.intp)

    def worst_errors(self, n: int) -> list[dict[str, str]]:
        """The ``n`` most confident wrong predictions (test before val on ties)."""
        wrong = [r for r in self.predictions if r["label"] != r["predicted"]]
        wrong.sort(key=lambda r: (-_float(r.get("confidence")), r["split"] != "test", r["path"]))
        return wrong[: max(0, n)]

    def curve_series(self) -> tuple[list[float], dict[str, list[float]]] | None:
        """Per-epoch values of the training log (one row per epoch; empty cells merged)."""
        if not self.curves:
            return None
        by_epoch: dict[float, dict[str, float]] = defaultdict(dict)
        names = ("train_loss", "val_loss", "val_acc")
        for row in self.curves:
            epoch = _float(row.get("epoch"))
            if math.isnan(epoch):
                continue
            for name in names:
                value = _float(row.get(name))
                if not math.isnan(value):
                    by_epoch[epoch][name] = value
        epochs = sorted(by_epoch)
        series = {
            n: [by_epoch[e].get(n, math.nan) for e in epochs]
            for n in names
            if any(n in by_epoch[e] for e in epochs)
        }
        return (epochs, series) if epochs and series else None


def _float(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is damaged: {exc}") from None


def read_run(run_dir: Path) -> RunFiles:
    """Parse the files of a run folder; a folder that is not a run is a one-line error."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise PathNotFoundError(f"run folder not found: {run_dir}")
    missing = [name for name in _REQUIRED if not (run_dir / name).is_file()]
    if missing:
        raise DataError(
            f"{run_dir} is not a headstart run folder (missing {', '.join(missing)}); "
            "give the folder that `headstart fit -o RUN` wrote"
        )
    config = run_dir / "config.yaml"
    curves = run_dir / "logs" / "metrics.csv"
    return RunFiles(
        run_dir=run_dir,
        info=_read_json(run_dir / "model" / "model.json"),
        metrics=_read_json(run_dir / "metrics.json"),
        run=_read_json(run_dir / "run.json"),
        manifest=_read_csv(run_dir / "manifest.csv"),
        problems=_read_csv(run_dir / "problems.csv"),
        predictions=_read_csv(run_dir / "predictions.csv"),
        config_text=config.read_text(encoding="utf-8") if config.is_file() else "",
        curves=_read_csv(curves) if curves.is_file() else None,
    )
