"""The run folder: every file ``fit`` writes, with one typed record per JSON file.

::

    RUN/
      model/              the bundle (:mod:`headstart.bundle`)
      config.yaml         the resolved configuration
      manifest.csv        every image used: path, split, sha256, a column per task
      problems.csv        files left out and duplicate groups
      predictions.csv     every held-out prediction (see :func:`prediction_rows`)
      near_duplicates.csv cross-split near-duplicates, when there are any
      metrics.json        split -> {"tasks": {task -> metrics}}      (:class:`MetricsRecord`)
      run.json            data, counts, extraction, timings, versions (:class:`RunRecord`)
      finetune.json       fine-tuning facts and the auto decision    (:class:`FinetuneRecord`)
      resume.json         what ``--resume`` needs                    (:class:`ResumeRecord`)
      ensemble.json       an ensemble's members, weights and leaderboard; a preset's steps
      distill.json        a distillation's teacher, temperature, alpha, images and scores
      checkpoints/ logs/  fine-tuning only
      report.html

Readers accept what older releases wrote (metrics.json of a one-task run without ``tasks``).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from headstart.config import FitConfig, load_config
from headstart.data import Manifest, Task
from headstart.data.leakage import NearDuplicate, write_near_duplicates
from headstart.data.manifest import LABEL_SEPARATOR, predicted_labels
from headstart.errors import ConfigError, DataError
from headstart.fsutil import atomic_write_text
from headstart.stats import TaskMetrics, metrics_from_dict

__all__ = [
    "FinetuneRecord",
    "MetricsRecord",
    "Probabilities",
    "ResumeRecord",
    "RunFolder",
    "RunRecord",
    "confidence",
    "prediction_columns",
]

MetricsRecord = dict[str, dict[str, TaskMetrics]]
"""split -> task -> metrics."""
Probabilities = dict[str, dict[str, np.ndarray]]
"""split -> task -> (N, C) probabilities, rows following the split's samples."""
_R = TypeVar("_R")
LOCK_FILE = ".lock"
"""Held (``flock``) by the fit writing the folder."""


def _record(cls: type[_R], d: Mapping[str, Any], what: str) -> _R:
    """``cls`` from a JSON object, unknown keys ignored (a newer release's); missing or bad
    fields are a one-line DataError naming ``what``."""
    names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in d.items() if k in names})
    except TypeError as exc:
        raise DataError(f"{what} is malformed: {exc}") from None


@dataclass
class RunRecord:
    """``run.json``: where the data came from and how the run went."""

    data: str
    data_hash: str
    split_source: str
    counts: dict[str, int]
    problems: int = 0
    duplicate_groups: int = 0
    cross_split_duplicates: int = 0
    extraction: dict[str, Any] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    near_duplicates: int = 0
    deduped: int = 0
    label_issues_dropped: int = 0
    validation: str = ""
    """How the ``val`` (or ``cv``) metrics were obtained, in words."""
    backbone_ranking: dict[str, Any] | None = None
    source: str = ""
    """What was scanned, as fit was given it: the folder or the CSV file (``data`` is the
    root images are relative to); empty in runs written before it was recorded."""
    semi_supervised: dict[str, Any] | None = None
    """``fit --unlabelled``: the unlabelled images used and, per task, the method chosen,
    the candidates' CV accuracy, the pseudo-labels used and their measured accuracy."""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for optional in ("backbone_ranking", "semi_supervised"):
            if d[optional] is None:
                del d[optional]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RunRecord:
        return _record(cls, d, "run.json")


@dataclass
class FinetuneRecord:
    """``finetune.json``: how the network was trained, and what ``--strategy auto`` chose."""

    strategy: str
    pretrained: bool | None = None
    pretrained_weights_sha256: str | None = None
    finetuned_weights_sha256: str | None = None
    imbalance: dict[str, Any] | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    precision: str | None = None
    train_images: int | None = None
    seed: int | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    chosen: str | None = None
    reason: str | None = None
    probe_val_score: float | None = None
    finetune_val_score: float | None = None
    pruning: dict[str, Any] | None = None
    """A pruned network's ratio, parameters and MACs before and after (finetune.prune)."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FinetuneRecord:
        return _record(cls, d, "finetune.json")


@dataclass
class ResumeRecord:
    """``resume.json``: the data and strategy a fine-tune started with, and whether it ended."""

    data: str
    strategy: str
    finished: bool = False


def confidence(task: Task, row: np.ndarray, chosen: Sequence[str]) -> float:
    """How sure the model is of its answer: the chosen class's probability (multi-class), or
    the probability of exactly the chosen label set with labels independent (multi-label)."""
    if not task.multi_label:
        return float(row[task.classes.index(chosen[0])])
    picked = np.isin(np.asarray(task.classes), list(chosen))
    return float(np.prod(np.where(picked, row, 1.0 - row)))


def prediction_columns(tasks: Sequence[Task]) -> dict[str, dict[str, Any]]:
    """The predictions.csv column names of each task: ``label``, ``predicted``,
    ``confidence`` and one ``p`` column per class; a single task's are plain
    (``label``, ``p:<class>``), several tasks' carry the task (``label:<task>``,
    ``p:<task>:<class>``)."""
    out = {}
    for task in tasks:
        tag = "" if len(tasks) == 1 else f":{task.name}"
        out[task.name] = {
            "label": f"label{tag}",
            "predicted": f"predicted{tag}",
            "confidence": f"confidence{tag}",
            "p": [f"p{tag}:{c}" for c in task.classes],
        }
    return out


class RunFolder:
    """The files of one run folder; see the module docstring."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def bundle(self) -> Path:
        return self.path / "model"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.path / "logs"

    def _file(self, name: str) -> Path:
        return self.path / name

    # -- writing safely --------------------------------------------------------------------
    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this run folder for one fit: a second fit into it ends at once with a one-line
        error.  The lock goes with the process (``flock``), so a killed fit leaves none behind;
        the worker processes a DDP launch starts run inside their parent's lock."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"output {self.path} exists and is not a folder")
        if os.environ.get("LOCAL_RANK", "0") != "0":
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"{self.path} is being written by another fit; wait for it to end or "
                    "choose another -o"
                ) from None
            yield
        finally:
            os.close(fd)

    @contextmanager
    def staged(self) -> Iterator[RunFolder]:
        """A run folder in a temp folder inside this one.  What is written there moves into
        place only when the block ends without error (renames need no space), so a full disk
        or a crash never leaves metrics beside no model, or a new model beside old metrics:
        an old model goes first, the new one (the mark of a finished run) comes last."""
        self.path.mkdir(parents=True, exist_ok=True)
        for left in self.path.glob(".staging-*"):  # a killed fit's (the lock makes it safe)
            shutil.rmtree(left, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.path))
        old = self.path / ".model.old"
        try:
            yield RunFolder(tmp)
            shutil.rmtree(old, ignore_errors=True)
            if (tmp / "model").exists() and self.bundle.exists():
                self.bundle.rename(old)
            for entry in sorted(tmp.iterdir(), key=lambda p: p.name == "model"):
                dest = self.path / entry.name
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                os.replace(entry, dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)

    # -- guard -----------------------------------------------------------------------------
    def check_output(self, overwrite: bool) -> None:
        """Refuse a path that is a file, or a folder that already holds a model (unless
        ``overwrite``)."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"output {self.path} exists and is not a folder")
        if self.bundle.exists() and not overwrite:
            raise ConfigError(
                f"{self.path} already holds a model; pass --overwrite to replace it, or choose "
                "another -o"
            )

    # -- config ----------------------------------------------------------------------------
    def write_config(self, config: FitConfig) -> None:
        text = yaml.safe_dump(config.to_dict(), sort_keys=False)
        atomic_write_text(self._file("config.yaml"), text)

    def read_config(self) -> FitConfig:
        return load_config(self._file("config.yaml"))

    def config_text(self) -> str:
        path = self._file("config.yaml")
        return path.read_text(encoding="utf-8") if path.is_file() else ""

    # -- data files ------------------------------------------------------------------------
    def write_data(self, manifest: Manifest, near: Sequence[NearDuplicate]) -> None:
        """manifest.csv, problems.csv and (when there are any) near_duplicates.csv."""
        self.path.mkdir(parents=True, exist_ok=True)
        manifest.write_csv(self._file("manifest.csv"))
        manifest.write_problems(self._file("problems.csv"))
        if near:
            write_near_duplicates(self._file("near_duplicates.csv"), manifest, list(near))

    def write_predictions(
        self,
        manifest: Manifest,
        probabilities: Probabilities,
        thresholds: Mapping[str, np.ndarray | None],
    ) -> None:
        """predictions.csv: per evaluated image its path and split, and per task the true and
        predicted labels (joined with ``|``), the confidence and every probability."""
        tasks = manifest.targets
        names = prediction_columns(tasks)
        header = ["path", "split"]
        for t in tasks:
            n = names[t.name]
            header += [n["label"], n["predicted"], n["confidence"], *n["p"]]
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        for split, per_task in probabilities.items():
            for i, sample in enumerate(manifest.split(split)):
                cells = [manifest.relative(sample.path), split]
                for t in tasks:
                    row = per_task[t.name][i]
                    chosen = predicted_labels(t, row, thresholds[t.name])
                    cells += [
                        LABEL_SEPARATOR.join(sample.labels[t.name]),
                        LABEL_SEPARATOR.join(chosen),
                        f"{confidence(t, row, chosen):.6f}",
                        *(f"{v:.6f}" for v in row),
                    ]
                writer.writerow(cells)
        atomic_write_text(self._file("predictions.csv"), buffer.getvalue())

    def read_csv(self, name: str) -> list[dict[str, str]]:
        path = self._file(name)
        if not path.is_file():
            return []
        with path.open(newline="", encoding="utf-8") as fh:
            return list(csv.DictReader(fh))

    # -- records ---------------------------------------------------------------------------
    def _write_json(self, name: str, value: Any) -> None:
        atomic_write_text(self._file(name), json.dumps(value, indent=2) + "\n")

    def _read_json(self, name: str) -> Any:
        path = self._file(name)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path} is damaged: {exc}") from None

    def write_metrics(self, metrics: MetricsRecord) -> dict[str, Any]:
        """metrics.json; returns the JSON form (the bundle keeps a copy)."""
        doc = metrics_json(metrics)
        self._write_json("metrics.json", doc)
        return doc

    def read_metrics(self, first_task: str = "label") -> MetricsRecord:
        """metrics.json (older one-task records are read as ``first_task``'s)."""
        doc = self._read_json("metrics.json") or {}
        return metrics_record(doc, first_task)

    def write_run(self, record: RunRecord) -> None:
        self._write_json("run.json", record.to_dict())

    def read_run(self) -> RunRecord | None:
        doc = self._read_json("run.json")
        return None if doc is None else RunRecord.from_dict(doc)

    def write_finetune(self, record: FinetuneRecord) -> None:
        self._write_json("finetune.json", record.to_dict())

    def read_finetune(self) -> FinetuneRecord | None:
        doc = self._read_json("finetune.json")
        return None if doc is None else FinetuneRecord.from_dict(doc)

    def write_ensemble(self, record: dict[str, Any]) -> None:
        """``ensemble.json``: an ensemble's method and members' leaderboard (and a preset's
        steps), as :func:`headstart.ensemble.ensemble_result` records them."""
        self._write_json("ensemble.json", record)

    def write_distill(self, record: dict[str, Any]) -> None:
        """``distill.json``: a distillation's teacher, settings, images and scores, as
        :func:`headstart.finetune.distill.distill` records them."""
        self._write_json("distill.json", record)

    def read_ensemble(self) -> dict[str, Any] | None:
        doc = self._read_json("ensemble.json")
        return doc if isinstance(doc, dict) else None

    def write_resume(self, record: ResumeRecord) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._write_json("resume.json", asdict(record))

    def read_resume(self) -> ResumeRecord | None:
        doc = self._read_json("resume.json")
        if doc is None:
            return None
        return _record(ResumeRecord, doc, str(self._file("resume.json")))

    def mark_finished(self) -> None:
        """Mark the resume record (when there is one) finished."""
        record = self.read_resume()
        if record is not None:
            record.finished = True
            self.write_resume(record)


def metrics_json(metrics: MetricsRecord) -> dict[str, Any]:
    """split -> {"tasks": {task: metrics dict}}: metrics.json and the bundle's copy."""
    return {
        split: {"tasks": {t: m.to_dict() for t, m in per_task.items()}}
        for split, per_task in metrics.items()
    }


def metrics_record(doc: Mapping[str, Any], first_task: str = "label") -> MetricsRecord:
    """Inverse of :func:`metrics_json`; a one-task record of older releases (split ->
    metrics) is read as the task ``first_task``."""
    out: MetricsRecord = {}
    for split, entry in doc.items():
        if isinstance(entry, dict) and "tasks" in entry:
            out[split] = {t: metrics_from_dict(m) for t, m in entry["tasks"].items()}
        elif isinstance(entry, dict):
            out[split] = {first_task: metrics_from_dict(entry)}
    return out
