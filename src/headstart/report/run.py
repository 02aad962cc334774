"""Reading a run folder (what ``headstart fit`` wrote) into one object the report draws from."""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from headstart.data import Task
from headstart.data.manifest import DEFAULT_TASK, LABEL_SEPARATOR, SPLITS
from headstart.errors import DataError, PathNotFoundError
from headstart.runfolder import MetricsRecord, RunFolder, RunRecord
from headstart.runfolder import prediction_columns as _columns

__all__ = ["RunFiles", "read_run", "task_title", "tasks_of_info"]

_REQUIRED = ("model/model.json", "metrics.json", "manifest.csv", "run.json")


def tasks_of_info(info: dict[str, Any]) -> list[Task]:
    """The tasks a bundle's model.json describes (format 1: one task of its ``classes``)."""
    if "tasks" in info:
        return [Task.from_dict(entry["task"]) for entry in info["tasks"]]
    return [Task(DEFAULT_TASK, tuple(str(c) for c in info.get("classes", [])))]


def task_title(run: RunFiles, task: Task) -> str:
    """How a task is named in headings: nothing for a one-task run, else its name and kind."""
    return "" if len(run.tasks) == 1 else f"{task.name} ({task.kind})"


@dataclass
class RunFiles:
    """The parsed files of one run folder.  CSV files are lists of row dicts."""

    run_dir: Path
    info: dict[str, Any]
    tasks: list[Task]
    metrics: MetricsRecord
    run: RunRecord
    manifest: list[dict[str, str]]
    problems: list[dict[str, str]] = field(default_factory=list)
    predictions: list[dict[str, str]] = field(default_factory=list)
    config_text: str = ""
    curves: list[dict[str, str]] | None = None

    @property
    def data_root(self) -> Path:
        """The data folder the run was fitted on; manifest and prediction paths are under it."""
        return Path(self.run.data)

    def image_path(self, rel: str) -> Path:
        path = Path(rel)
        return path if path.is_absolute() else self.data_root / path

    @property
    def modality(self) -> str:
        """``"text"`` when the run read texts (its manifest has a text column, or its backbone
        is a text encoder), else ``"image"``.  A text sample's path names a ``.txt`` file or a
        CSV row (``<file>.csv#<line>``): never an image to open."""
        backbone = self.info.get("backbone", {})
        if "text" in backbone or any("text" in part for part in backbone.get("parts") or []):
            return "text"
        return "text" if self.manifest and "text" in self.manifest[0] else "image"

    @property
    def noun(self) -> str:
        """What one sample is called in sentences, plural: ``texts`` or ``images``."""
        return "texts" if self.modality == "text" else "images"

    def texts(self) -> dict[str, str]:
        """A text run's texts by manifest path (empty for an image run)."""
        return {row["path"]: row.get("text", "") for row in self.manifest if "text" in row}

    def examples(self, task: Task, n: int) -> dict[str, list[dict[str, str]]]:
        """Up to ``n`` manifest rows holding each of the task's labels, training rows first
        (then in manifest order, which is stable between runs)."""
        rank = {"train": 0, "val": 1, "test": 2}
        rows = sorted(self.manifest, key=lambda r: rank.get(r.get("split", ""), 3))
        out: dict[str, list[dict[str, str]]] = {c: [] for c in task.classes}
        for row in rows:
            for label in (row.get(task.name) or "").split(LABEL_SEPARATOR):
                if label in out and len(out[label]) < n:
                    out[label].append(row)
        return out

    def counts(self, task: Task) -> dict[str, dict[str, int]]:
        """Images per split holding each of the task's labels (splits in train/val/test order)."""
        per: dict[str, Counter[str]] = defaultdict(Counter)
        for row in self.manifest:
            cell = row.get(task.name, "")
            per[row["split"]].update(x for x in cell.split(LABEL_SEPARATOR) if x)
        order = [s for s in SPLITS if s in per] + sorted(s for s in per if s not in SPLITS)
        return {s: dict(per[s]) for s in order}

    def columns(self, task: Task) -> dict[str, Any]:
        """predictions.csv column names of ``task``."""
        return _columns(self.tasks)[task.name]

    def probabilities(self, split: str, task: Task) -> tuple[np.ndarray, list[list[str]]]:
        """(N, C) probabilities and the true label cells of one split from predictions.csv."""
        cols = self.columns(task)
        rows = [r for r in self.predictions if r["split"] == split]
        proba = np.array(
            [[_float(r.get(c)) for c in cols["p"]] for r in rows], dtype=np.float64
        ).reshape(len(rows), len(task.classes))
        truth = [[x for x in r.get(cols["label"], "").split(LABEL_SEPARATOR) if x] for r in rows]
        return proba, truth

    def worst_errors(self, task: Task, n: int) -> list[dict[str, str]]:
        """The ``n`` most confident wrong answers of ``task`` (test before val on ties)."""
        cols = self.columns(task)
        wrong = [r for r in self.predictions if r.get(cols["label"]) != r.get(cols["predicted"])]
        wrong.sort(
            key=lambda r: (-_float(r.get(cols["confidence"])), r["split"] != "test", r["path"])
        )
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


def read_run(run_dir: Path) -> RunFiles:
    """Parse the files of a run folder; a folder that is not a run is a one-line error."""
    folder = RunFolder(run_dir)
    if not folder.path.exists():
        raise PathNotFoundError(f"run folder not found: {folder.path}")
    missing = [name for name in _REQUIRED if not (folder.path / name).is_file()]
    if missing:
        raise DataError(
            f"{folder.path} is not a headstart run folder (missing {', '.join(missing)}); "
            "give the folder that `headstart fit -o RUN` wrote"
        )
    doc = folder.bundle / "model.json"
    try:
        info = json.loads(doc.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{doc} is damaged: {exc}") from None
    tasks = tasks_of_info(info)
    record = folder.read_run()
    curves = folder.logs / "metrics.csv"
    return RunFiles(
        run_dir=folder.path,
        info=info,
        tasks=tasks,
        metrics=folder.read_metrics(tasks[0].name),
        run=record if record is not None else RunRecord("?", "?", "?", {}),
        manifest=folder.read_csv("manifest.csv"),
        problems=folder.read_csv("problems.csv"),
        predictions=folder.read_csv("predictions.csv"),
        config_text=folder.config_text(),
        curves=folder.read_csv("logs/metrics.csv") if curves.is_file() else None,
    )
