"""A fitted classifier: backbone reference + head + classes; predicts and evaluates images."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import BackboneRef
from headstart.bundle import BundleContents, read_bundle, write_bundle
from headstart.data.manifest import DEFAULT_TASK, Task
from headstart.errors import ConfigError, DataError
from headstart.evaluate import Metrics, evaluate_predictions
from headstart.features import EmbeddingStore, Runner, extract, feature_runner
from headstart.features.tta import check_tta, tta_proba
from headstart.inputs import expand_inputs

__all__ = ["Model", "Prediction", "TaskPrediction", "load", "top_predictions"]


@dataclass(frozen=True)
class TaskPrediction:
    """One task's answer for one image: the chosen labels (one for a multi-class task, those
    at or above their threshold for a multi-label task, possibly none) and the top scores."""

    labels: list[str]
    top: list[tuple[str, float]]


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, or the reason it could not be read.  For a multi-label
    or multi-task model, ``tasks`` holds each task's answer and ``top`` the first task's."""

    path: Path
    top: list[tuple[str, float]]
    error: str | None = None
    tasks: dict[str, TaskPrediction] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": str(self.path),
            "top": _top_json(self.top),
            "error": self.error,
        }
        if self.tasks is not None:
            out["tasks"] = {
                name: {"labels": t.labels, "top": _top_json(t.top)}
                for name, t in self.tasks.items()
            }
        return out


def _top_json(top: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"label": c, "probability": round(p, 6)} for c, p in top]


def top_predictions(
    paths: Sequence[Path],
    proba: np.ndarray,
    failures: dict[int, str],
    classes: Sequence[str],
    top_k: int,
) -> list[Prediction]:
    """One :class:`Prediction` per path: the top-k of its probability row, or its failure
    (shared by every runtime, so they report alike)."""
    k = min(top_k, len(classes))
    out = []
    for i, path in enumerate(paths):
        if i in failures:
            out.append(Prediction(path, [], failures[i]))
            continue
        best = np.argsort(-proba[i])[:k]
        out.append(Prediction(path, [(classes[j], float(proba[i, j])) for j in best]))
    return out


class Model:
    """A model loaded from a bundle (see :func:`load`) or returned by :func:`headstart.fit`."""

    def __init__(self, contents: BundleContents, path: Path | None = None) -> None:
        self._contents = contents
        self.path = path
        self._runner: Runner | None = None

    @property
    def classes(self) -> list[str]:
        """The classes of the (first) task."""
        return self._contents.classes

    @property
    def tasks(self) -> list[Task]:
        """Every task the model answers; a plain model has one multi-class task."""
        return self._contents.tasks or [Task(DEFAULT_TASK, tuple(self.classes))]

    @property
    def is_plain(self) -> bool:
        """One task with one label per image: every command supports such a model."""
        return not self._contents.tasks

    def require_plain(self, what: str) -> None:
        """Raise a one-line error when ``what`` does not support this model's tasks."""
        if not self.is_plain:
            kinds = ", ".join(
                f"{t.name} ({'multi-label' if t.multi_label else 'multi-class'})"
                for t in self.tasks
            )
            raise ConfigError(
                f"{what} supports single-task, single-label models; this model has tasks {kinds}"
                " (use predict or evaluate)"
            )

    @property
    def info(self) -> dict[str, Any]:
        """The bundle's JSON document: backbone, head, metrics, config, versions."""
        return self._contents.info

    @property
    def backbone_name(self) -> str:
        return self._contents.backbone.name

    @property
    def backbone_ref(self) -> BackboneRef:
        """The backbone reference (name, weights, preprocessing); ``.build()`` gives the module."""
        return self._contents.backbone

    @property
    def head(self) -> Any:
        """The fitted head (columns follow ``head.classes_``; see :attr:`classes`)."""
        return self._contents.head

    def embed(
        self, paths: Sequence[Path], *, store: EmbeddingStore | None = None, progress: bool = False
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Embeddings of ``paths`` (rows of unreadable files are NaN) and {index: reason}."""
        result = extract(paths, None, self._contents.backbone, store=store, progress=progress)
        return result.features, result.failures

    def predict_proba(
        self,
        paths: Sequence[Path],
        *,
        store: EmbeddingStore | None = None,
        progress: bool = False,
        tta: str = "none",
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Class probabilities (columns follow :attr:`classes`; NaN rows for unreadable files).

        ``tta``: test-time augmentation, ``none``, ``flip``, ``crops`` or ``flip+crops``; the
        mean of per-view probabilities (see :mod:`headstart.features.tta`)."""
        if check_tta(tta) != "none":
            ref, n = self._contents.backbone, len(self.classes)
            return tta_proba(paths, ref, self._class_proba, n, tta, store=store, progress=progress)
        features, failures = self.embed(paths, store=store, progress=progress)
        proba = np.full((len(paths), len(self.classes)), np.nan, dtype=np.float64)
        ok = np.array([i not in failures for i in range(len(paths))], dtype=bool)
        if ok.any():
            proba[ok] = self._class_proba(features[ok])
        return proba, failures

    def _class_proba(self, features: np.ndarray) -> np.ndarray:
        proba = self.uncalibrated_proba(features)
        t = self.temperature
        if t is None:
            return proba
        from headstart.evaluate.temperature import apply_temperature

        return apply_temperature(proba, t)

    def uncalibrated_proba(self, features: np.ndarray) -> np.ndarray:
        """The head's own probabilities for embeddings (columns follow :attr:`classes`)."""
        head = self._contents.head
        raw = head.predict_proba(features)
        order = [list(head.classes_).index(c) for c in self.classes]
        return np.asarray(raw[:, order], dtype=np.float64)

    @property
    def temperature(self) -> float | None:
        """The stored temperature (``headstart calibrate``) applied to every probability, or
        None when the model is not calibrated (bundles without a "calibration" record)."""
        record = self._contents.info.get("calibration")
        if not isinstance(record, dict) or record.get("method") != "temperature":
            return None
        return float(record["temperature"])

    def set_calibration(self, record: dict[str, Any] | None) -> None:
        """Set (or with None remove) the calibration record; :meth:`save` writes it."""
        if record is None:
            self._contents.info.pop("calibration", None)
        else:
            self._contents.info["calibration"] = dict(record)

    def task_proba(
        self, paths: Sequence[Path], *, store: EmbeddingStore | None = None, progress: bool = False
    ) -> tuple[dict[str, np.ndarray], dict[int, str]]:
        """Per task, probabilities with columns in the task's class order (NaN rows for
        unreadable files), and {index: reason}."""
        if self.is_plain:
            proba, failures = self.predict_proba(paths, store=store, progress=progress)
            return {self.tasks[0].name: proba}, failures
        from headstart.tasks import task_proba

        features, failures = self.embed(paths, store=store, progress=progress)
        ok = np.array([i not in failures for i in range(len(paths))], dtype=bool)
        out: dict[str, np.ndarray] = {}
        for task in self.tasks:
            proba = np.full((len(paths), len(task.classes)), np.nan, dtype=np.float64)
            if ok.any():
                head = self._contents.heads[task.name]
                proba[ok] = task_proba(head, features[ok], task.classes)
            out[task.name] = proba
        return out, failures

    def predict_images(self, images: Sequence[Any], *, engine: str = "auto") -> np.ndarray:
        """Class probabilities for decoded RGB PIL images (e.g. uploads); the backbone is kept
        warm between calls.  Columns follow :attr:`classes`."""
        if not images:
            return np.empty((0, len(self.classes)))
        if self._runner is None:
            self._runner = feature_runner(self._contents.backbone, engine)
        prep = self._contents.backbone.preprocessing
        batch = np.stack([prep(image) for image in images])
        return self._class_proba(self._runner(batch))

    def predict(
        self,
        images: Iterable[str | Path],
        *,
        top_k: int = 3,
        progress: bool = False,
        tta: str = "none",
    ) -> list[Prediction]:
        """Top-k predictions for files, folders (searched recursively) and glob patterns;
        ``tta`` as in :meth:`predict_proba`."""
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        check_tta(tta)
        paths = expand_inputs(images)
        if not self.is_plain:
            if tta != "none":
                self.require_plain("test-time augmentation")
            return self._task_predictions(paths, top_k, progress)
        proba, failures = self.predict_proba(paths, progress=progress, tta=tta)
        return top_predictions(paths, proba, failures, self.classes, top_k)

    def _task_predictions(
        self, paths: Sequence[Path], top_k: int, progress: bool
    ) -> list[Prediction]:
        probas, failures = self.task_proba(paths, progress=progress)
        per_task = {
            t.name: top_predictions(paths, probas[t.name], failures, t.classes, top_k)
            for t in self.tasks
        }
        out = []
        for i, path in enumerate(paths):
            if i in failures:
                out.append(Prediction(path, [], failures[i]))
                continue
            answers = {}
            for task in self.tasks:
                top = per_task[task.name][i].top
                row = probas[task.name][i]
                if task.multi_label:
                    cut = self._contents.heads[task.name].thresholds
                    chosen = [c for c, p, t in zip(task.classes, row, cut, strict=True) if p >= t]
                    # every chosen label is listed with its score, then the next best up to k
                    chosen.sort(key=lambda c: -row[task.classes.index(c)])
                    rest = [(c, q) for c, q in top if c not in chosen]
                    scored = [(c, float(row[task.classes.index(c)])) for c in chosen]
                    top = (scored + rest)[: max(top_k, len(chosen))]
                else:
                    chosen = [top[0][0]]
                answers[task.name] = TaskPrediction(chosen, top)
            out.append(Prediction(path, answers[self.tasks[0].name].top, None, answers))
        return out

    def evaluate(
        self,
        paths: Sequence[Path],
        labels: Sequence[str],
        *,
        store: EmbeddingStore | None = None,
        n_boot: int = 1000,
        progress: bool = False,
        tta: str = "none",
    ) -> tuple[Metrics, dict[int, str]]:
        """Metrics with bootstrap intervals on labelled images; unreadable images are left out
        and returned as {index: reason}.  ``tta`` as in :meth:`predict_proba`."""
        self.require_plain("Model.evaluate (use evaluate_tasks)")
        check_tta(tta)
        unknown = sorted(set(labels) - set(self.classes))
        if unknown:
            raise DataError(
                f"labels the model does not know: {', '.join(unknown)}; "
                f"model classes: {', '.join(self.classes)}"
            )
        proba, failures = self.predict_proba(paths, store=store, progress=progress, tta=tta)
        keep = [i for i in range(len(paths)) if i not in failures]
        if not keep:
            raise DataError("no readable image to evaluate on")
        y_pred = [self.classes[int(j)] for j in np.argmax(proba[keep], axis=1)]
        y_true = [labels[i] for i in keep]
        metrics = evaluate_predictions(
            y_true, y_pred, self.classes, n_boot=n_boot, proba=proba[keep]
        )
        return metrics, failures

    def evaluate_tasks(
        self,
        paths: Sequence[Path],
        cells: Mapping[str, Sequence[Sequence[str]]],
        *,
        store: EmbeddingStore | None = None,
        n_boot: int = 1000,
        progress: bool = False,
    ) -> tuple[dict[str, Any], dict[int, str]]:
        """Per-task metrics (multi-class :class:`Metrics` or multi-label
        :class:`~headstart.tasks.MultiLabelMetrics`): ``cells[task][i]`` holds image i's labels
        of that task.  Unreadable images are left out and returned as {index: reason}."""
        from headstart.tasks import evaluate_task

        for task in self.tasks:
            seen = {label for cell in cells[task.name] for label in cell}
            unknown = sorted(seen - set(task.classes))
            if unknown:
                raise DataError(
                    f"labels the model does not know in '{task.name}': {', '.join(unknown)}; "
                    f"model classes: {', '.join(task.classes)}"
                )
        probas, failures = self.task_proba(paths, store=store, progress=progress)
        keep = [i for i in range(len(paths)) if i not in failures]
        if not keep:
            raise DataError("no readable image to evaluate on")
        heads = self._contents.heads or {self.tasks[0].name: self._contents.head}
        metrics = {
            t.name: evaluate_task(
                t,
                [cells[t.name][i] for i in keep],
                probas[t.name][keep],
                heads[t.name],
                n_boot=n_boot,
            )
            for t in self.tasks
        }
        return metrics, failures

    def save(self, path: Path) -> Path:
        """Write the bundle to ``path`` (atomic); returns the path."""
        c = self._contents
        kept = ("metrics", "config", "data_hash", "run", "calibration")
        extra = {k: v for k, v in c.info.items() if k in kept}
        weights = c.backbone.weights_path
        return write_bundle(
            path,
            head=c.heads if c.tasks else c.head,
            backbone=c.backbone,
            backbone_weights=weights if weights and weights.suffix == ".safetensors" else None,
            classes=c.classes,
            extra=extra,
            tasks=c.tasks or None,
        )


def load(path: str | Path) -> Model:
    """Load a model bundle written by ``headstart fit`` (or :meth:`Model.save`)."""
    path = Path(path)
    return Model(read_bundle(path), path)
