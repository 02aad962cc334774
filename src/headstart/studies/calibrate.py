"""``calibrate``: fit temperatures for a saved model's tasks and store them in the bundle.

A multi-class task gets one temperature (:func:`~headstart.stats.temperature.fit_temperature`);
a multi-label task one per label (:func:`~headstart.stats.temperature.fit_label_temperatures`).
What each did is kept beside it: the NLL and ECE before and after.  For a multi-label task both
are means over labels of the label's binary problem ``[1 - p, p]``: the mean binary
cross-entropy, and the mean top-label ECE (15 bins) of those two-column probabilities.

The record in model.json is ``{"method": "temperature", "tasks": {name: {"temperature": T, ...}
| {"temperatures": [T per label], ...}}}``; calibrating some tasks keeps the others' entries.
A multi-label head's decision thresholds are moved with its temperatures, so calibration
changes no predicted label of any task.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from headstart.cache import CacheRoot
from headstart.data import Task
from headstart.data.labelled import sample_inputs
from headstart.data.manifest import indicator
from headstart.errors import ConfigError, DataError
from headstart.evaluation import model_split
from headstart.model import Model, load
from headstart.stats.calibration import expected_calibration_error
from headstart.stats.temperature import (
    apply_calibration,
    apply_label_temperatures,
    binary_columns,
    fit_calibration,
    negative_log_likelihood,
)

__all__ = ["BundleCalibration", "TaskCalibration", "calibrate_bundle", "calibrate_task"]


@dataclass(frozen=True)
class TaskCalibration:
    """The temperature(s) fitted for one task and what they did on the data they were fitted
    on (multi-label: NLL and ECE are means over labels of the binary problems)."""

    task: str
    multi_label: bool
    temperatures: list[float]
    """One for a multi-class task; one per label, in the task's label order, otherwise."""
    n: int
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    data: str
    split: str

    @property
    def temperature(self) -> float:
        """A multi-class task's temperature (the first label's for a multi-label one)."""
        return self.temperatures[0]

    def to_dict(self) -> dict[str, Any]:
        """The task's entry in the stored record."""
        record = asdict(self)
        del record["task"], record["multi_label"], record["temperatures"]
        key = "temperatures" if self.multi_label else "temperature"
        value: Any = list(self.temperatures) if self.multi_label else self.temperature
        return {key: value, **record}


@dataclass
class BundleCalibration:
    """What ``calibrate`` fitted, per task, with the uncalibrated probabilities and truth it
    was fitted on (multi-class: class indices; multi-label: an (n, L) 0/1 matrix)."""

    tasks: dict[str, TaskCalibration]
    proba: dict[str, NDArray[np.float64]] = field(default_factory=dict)
    truth: dict[str, NDArray[Any]] = field(default_factory=dict)
    record: dict[str, Any] = field(default_factory=dict)
    """The whole calibration record now stored in the bundle (other tasks' entries kept)."""


def _per_label(
    score: Callable[[NDArray[np.float64], NDArray[np.intp]], float],
    proba: NDArray[np.float64],
    Y: NDArray[Any],
) -> float:
    """Mean over labels of ``score`` on the label's ``[1 - p, p]`` against its 0/1 truth."""
    y = np.asarray(Y, dtype=np.intp)
    return float(np.mean([score(binary_columns(proba[:, j]), y[:, j]) for j in range(y.shape[1])]))


def _label_nll(proba: NDArray[np.float64], Y: NDArray[Any]) -> float:
    """Mean over labels of the binary cross-entropy of the label's probabilities."""
    return _per_label(negative_log_likelihood, proba, Y)


def _label_ece(proba: NDArray[np.float64], Y: NDArray[Any]) -> float:
    """Mean over labels of the top-label ECE of ``[1 - p, p]``."""
    return _per_label(expected_calibration_error, proba, Y)


def calibrate_task(
    task: Task, proba: NDArray[np.float64], truth: NDArray[Any], data: str, split: str
) -> TaskCalibration:
    """Fit ``task``'s temperature(s) on uncalibrated ``proba`` against ``truth`` (class
    indices, or the 0/1 matrix of a multi-label task)."""
    fitted = fit_calibration(proba, truth, task.multi_label)
    after = apply_calibration(proba, fitted)
    if isinstance(fitted, list):
        return TaskCalibration(
            task.name, True, fitted, len(proba),
            _label_nll(proba, truth), _label_nll(after, truth),
            _label_ece(proba, truth), _label_ece(after, truth), data, split,
        )  # fmt: skip
    return TaskCalibration(
        task.name, False, [fitted], len(proba),
        negative_log_likelihood(proba, truth), negative_log_likelihood(after, truth),
        expected_calibration_error(proba, truth), expected_calibration_error(after, truth),
        data, split,
    )  # fmt: skip


def _stored_tasks(model: Model) -> dict[str, dict[str, Any]]:
    """The calibration entries already in the bundle, by task (an old one-task record is read
    as the first task's)."""
    record = model.info.get("calibration")
    if not isinstance(record, Mapping) or record.get("method") != "temperature":
        return {}
    if "tasks" in record:
        return {str(k): dict(v) for k, v in record["tasks"].items()}
    old = {k: v for k, v in record.items() if k != "method"}
    return {model.tasks[0].name: old}


def _move_thresholds(model: Model, task: Task, old: Any, new: list[float]) -> None:
    """Carry a multi-label head's thresholds from the old temperatures' scale to the new one,
    so every label is predicted exactly as before."""
    head = model.heads[task.name]
    cut = np.asarray(head.thresholds_, dtype=np.float64)[None, :]
    if isinstance(old, list) and len(old) == len(task.classes):
        cut = apply_label_temperatures(cut, 1.0 / np.asarray(old, dtype=np.float64))
    head.thresholds_ = apply_label_temperatures(cut, np.asarray(new))[0]


def calibrate_bundle(
    model: Model | str | Path,
    data: str | Path,
    *,
    task: str | None = None,
    split: str = "val",
    progress: bool = False,
    cache: CacheRoot | None = None,
) -> BundleCalibration:
    """Fit temperatures for ``task`` (None: every task) of the model (a loaded one, or a
    bundle path loaded with ``cache``) on the labelled images of ``data`` (its ``split`` when
    it has split folders, else all of it) and rewrite the bundle, atomically."""
    loaded = model if isinstance(model, Model) else load(model, cache=cache)
    if loaded.path is None:
        raise ConfigError("calibrate needs a model loaded from a bundle folder, to rewrite it")
    chosen = loaded.tasks if task is None else [loaded.task(task)]
    _, use, samples = model_split(loaded, data, split, whole_if_unsplit=True)
    features, failures = loaded.embed(sample_inputs(samples), progress=progress)
    keep = [i for i in range(len(samples)) if i not in failures]
    if not keep:
        raise DataError(f"no readable image in {data} ({use}) to calibrate on")
    raw = loaded.uncalibrated_proba(features[keep])
    stored, before = _stored_tasks(loaded), loaded.temperatures
    out = BundleCalibration({})
    for t in chosen:
        cells = [samples[i].labels[t.name] for i in keep]
        truth: NDArray[Any]
        if t.multi_label:
            truth = indicator(cells, t.classes)
        else:
            truth = np.array([t.classes.index(cell[0]) for cell in cells], dtype=np.intp)
        fitted = calibrate_task(t, raw[t.name], truth, str(data), use)
        if t.multi_label:
            _move_thresholds(loaded, t, before.get(t.name), fitted.temperatures)
        out.tasks[t.name], out.proba[t.name], out.truth[t.name] = fitted, raw[t.name], truth
        stored[t.name] = fitted.to_dict()
    out.record = {"method": "temperature", "tasks": stored}
    loaded.set_calibration(out.record)
    loaded.save(Path(loaded.path))
    return out
