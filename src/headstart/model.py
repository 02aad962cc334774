"""A fitted model: backbone reference + one head per task; predicts and evaluates images."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import BackboneRef
from headstart.bundle import BundleContents, read_bundle, write_bundle
from headstart.cache import CacheRoot, loaded_backbone
from headstart.data.labelled import check_known_labels
from headstart.data.manifest import Task, pick_task, predicted_labels
from headstart.data.texts import text_digest, text_problem
from headstart.errors import ConfigError, DataError
from headstart.features import ImageFeatures, extract
from headstart.features.int8 import float_ref, quantize_ref
from headstart.features.tta import check_tta, view_embeddings
from headstart.heads import OodScorer, task_proba, task_weights, thresholds_of
from headstart.heads.tfidf import is_words
from headstart.inputs import expand_inputs, expand_texts
from headstart.stats import TaskMetrics, task_metrics
from headstart.stats.temperature import Temperature, apply_calibration, read_temperatures

__all__ = [
    "Model",
    "Prediction",
    "TaskPrediction",
    "answer",
    "load",
    "make_predictions",
    "split_columns",
]

Probabilities = dict[str, np.ndarray]
"""Task name -> (N, C) probabilities, columns in the task's class order."""


@dataclass(frozen=True)
class TaskPrediction:
    """One task's answer for one image: the chosen labels (one for a multi-class task, those
    at or above their threshold for a multi-label task, possibly none) and the top scores."""

    labels: list[str]
    top: list[tuple[str, float]]

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "top": _top_json(self.top)}


@dataclass(frozen=True)
class Prediction:
    """Every task's answer for one image, or the reason it could not be read.  ``top`` is the
    first task's top-k (the whole answer of a one-task model).  ``ood_score``: how unlike the
    training images it is (higher = more unusual, see :mod:`headstart.heads.ood`) and ``ood``
    whether that is above the model's threshold; both None for a model without an OOD scorer
    (bundles written before there was one) and for unreadable files."""

    path: Path
    tasks: dict[str, TaskPrediction] = field(default_factory=dict)
    error: str | None = None
    ood_score: float | None = None
    ood: bool | None = None
    text: str | None = None
    """A text model's input text (``path`` then names where it came from)."""

    @property
    def top(self) -> list[tuple[str, float]]:
        return next(iter(self.tasks.values())).top if self.tasks else []

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "top": _top_json(self.top),
            "error": self.error,
            "tasks": {name: t.to_dict() for name, t in self.tasks.items()},
            **ood_json(self.ood_score, self.ood),
            **({"text": self.text} if self.text is not None else {}),
        }


def ood_json(score: float | None, flagged: bool | None) -> dict[str, Any]:
    """``ood_score`` (rounded) and ``ood`` as JSON answers carry them (null when unknown)."""
    return {"ood_score": None if score is None else round(score, 6), "ood": flagged}


def _top_json(top: list[tuple[str, float]]) -> list[dict[str, Any]]:
    return [{"label": c, "probability": round(p, 6)} for c, p in top]


def answer(
    task: Task, row: np.ndarray, thresholds: np.ndarray | None, top_k: int
) -> TaskPrediction:
    """One task's answer from its probability row: the chosen labels, listed first with their
    scores, then the next best up to ``top_k``."""
    chosen = predicted_labels(task, row, thresholds)
    index = {c: j for j, c in enumerate(task.classes)}
    best = [task.classes[j] for j in np.argsort(-row, kind="stable")]
    ordered = chosen + [c for c in best if c not in chosen]
    k = max(min(top_k, len(task.classes)), len(chosen))
    return TaskPrediction(chosen, [(c, float(row[index[c]])) for c in ordered[:k]])


def make_predictions(
    paths: Sequence[Path],
    probas: Mapping[str, np.ndarray],
    failures: Mapping[int, str],
    tasks: Sequence[Task],
    thresholds: Mapping[str, np.ndarray | None],
    top_k: int,
    ood: tuple[np.ndarray, float] | None = None,
) -> list[Prediction]:
    """One :class:`Prediction` per path from per-task probabilities, or its failure (shared by
    every runtime, so they report alike); ``ood``: (N,) OOD scores and the threshold above
    which one is flagged (None: the model has no OOD scorer)."""
    out = []
    for i, path in enumerate(paths):
        if i in failures:
            out.append(Prediction(path, {}, failures[i]))
            continue
        answers = {t.name: answer(t, probas[t.name][i], thresholds[t.name], top_k) for t in tasks}
        if ood is None:
            out.append(Prediction(path, answers))
            continue
        score = float(ood[0][i])
        out.append(Prediction(path, answers, ood_score=score, ood=score > ood[1]))
    return out


def split_columns(tasks: Sequence[Task], proba: np.ndarray) -> Probabilities:
    """Concatenated per-task columns (tasks in order) -> {task: its columns}."""
    out, start = {}, 0
    for task in tasks:
        out[task.name] = proba[:, start : start + len(task.classes)]
        start += len(task.classes)
    return out


class Model:
    """A model loaded from a bundle (see :func:`load`) or returned by :func:`headstart.fit`.

    Embeddings are cached under ``cache`` (default: the default cache root)."""

    def __init__(
        self, contents: BundleContents, path: Path | None = None, cache: CacheRoot | None = None
    ) -> None:
        self.path = path
        self.cache = cache or CacheRoot.of()
        files = contents.info.get("files", {})  # the weights files were verified on reading
        backbone = loaded_backbone(contents.backbone, files, self.cache)
        self._contents = replace(contents, backbone=backbone)
        self._runner: ImageFeatures | None = None
        self._text_runner: Any = None  # a warm TextFeatures, built on the first served text

    # -- what the model is ---------------------------------------------------------------
    @property
    def tasks(self) -> list[Task]:
        """Every task the model answers, in order; a plain classifier has one."""
        return self._contents.tasks

    @property
    def heads(self) -> dict[str, Any]:
        """The fitted head of each task, by name."""
        return self._contents.heads

    def task(self, name: str | None = None) -> Task:
        """The task called ``name`` (None: the first)."""
        return pick_task(self.tasks, name)

    @property
    def classes(self) -> list[str]:
        """The first task's classes (every task's are in :attr:`tasks`)."""
        return list(self.tasks[0].classes)

    @property
    def info(self) -> dict[str, Any]:
        """The bundle's JSON document: tasks, backbone, head, metrics, config, versions."""
        return self._contents.info

    @property
    def modality(self) -> str:
        """``"image"`` or ``"text"``: what the model reads (its backbone's modality)."""
        return self.backbone_ref.modality

    @property
    def text_column(self) -> str:
        """A text model's CSV text column (its config's ``data.text_column``; default text)."""
        column = self.info.get("config", {}).get("data", {}).get("text_column")
        return str(column) if column else "text"

    @property
    def backbone_name(self) -> str:
        return self._contents.backbone.name

    @property
    def backbone_ref(self) -> BackboneRef:
        """The backbone reference (name, weights, preprocessing); ``.build()`` gives the module
        (a fused backbone's ``.parts`` are the modules' refs, each with its preprocessing)."""
        return self._contents.backbone

    def with_backbone(self, ref: BackboneRef) -> Model:
        """This model's heads, calibration and OOD scorer on ``ref``: the same backbone (same
        float32 weights) in another form, e.g. with an int8 model from
        :func:`headstart.features.int8.quantize_ref`; ``ConfigError`` for another backbone."""
        mine = float_ref(self.backbone_ref)
        if float_ref(ref).weights_sha256 != mine.weights_sha256 or ref.name != mine.name:
            raise ConfigError(
                f"with_backbone takes this model's own backbone '{mine.name}' (e.g. its int8 "
                f"form), got '{ref.name}'"
            )
        info = copy.deepcopy(self._contents.info)  # its config is edited below
        extract = info.get("config", {}).get("extract")
        if isinstance(extract, dict):  # the recorded config says which backbone runs
            extract["precision"] = ref.precision
        contents = replace(self._contents, backbone=ref, info=info)
        return Model(contents, None, self.cache)

    def quantized(self, calibration_paths: Sequence[Path]) -> Model:
        """This model with a static int8 backbone calibrated on ``calibration_paths`` (training
        images; up to 300 evenly spread are used), the heads kept as they are."""
        ref = quantize_ref(self.backbone_ref, calibration_paths, self.cache.store)
        return self.with_backbone(ref)

    def thresholds(self, task: Task) -> np.ndarray | None:
        """A multi-label task's decision thresholds (None for a multi-class task)."""
        return thresholds_of(task, self.heads[task.name])

    @property
    def ood(self) -> OodScorer | None:
        """The out-of-distribution scorer (None for bundles written before there was one)."""
        return self._contents.ood

    @property
    def ood_threshold(self) -> float | None:
        """The OOD score above which an image is flagged (None without a scorer)."""
        return None if self.ood is None else self.ood.threshold

    def ood_scores(
        self, paths: Sequence[Any], *, progress: bool = False
    ) -> tuple[np.ndarray, dict[int, str]]:
        """(N,) OOD scores of image files (NaN for unreadable ones) and {index: reason};
        ``ConfigError`` when the model has no OOD scorer."""
        scorer = self.require_ood()
        features, failures = self.embed(paths, progress=progress)
        out = np.full(len(paths), np.nan)
        ok = np.array([i not in failures for i in range(len(paths))], dtype=bool)
        if ok.any():
            out[ok] = scorer.score(features[ok])
        return out, failures

    def require_ood(self) -> OodScorer:
        """The OOD scorer (``ood.score(features)``: (N,) scores, higher = more unlike the
        training images); ``ConfigError`` (one line) when the model has none."""
        if self.ood is None:
            where = self.path or "this model"
            raise ConfigError(f"{where} has no out-of-distribution scorer: fit it again")
        return self.ood

    # -- probabilities -------------------------------------------------------------------
    def embed(
        self, inputs: Sequence[Any], *, progress: bool = False
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Embeddings of ``inputs`` (image paths; texts for a text model) and {index: reason};
        rows of unreadable files and unusable (e.g. empty) texts are NaN."""
        if self.modality == "text":
            return self._embed_texts([str(t).strip() for t in inputs], progress)
        result = extract(
            [Path(p) for p in inputs],
            None,
            self._contents.backbone,
            store=self.cache.store,
            progress=progress,
        )
        return result.features, result.failures

    def _embed_texts(self, texts: list[str], progress: bool) -> tuple[np.ndarray, dict[int, str]]:
        if is_words(self.backbone_ref):  # TF-IDF: the head reads the texts themselves
            failures = {i: why for i, t in enumerate(texts) if (why := text_problem(t)) is not None}
            return np.asarray(texts, dtype=object).reshape(-1, 1), failures
        # tokenizers and the encoder's ONNX session load only when a text is embedded
        from headstart.features.text_engine import extract_texts

        failures = {i: why for i, t in enumerate(texts) if (why := text_problem(t)) is not None}
        ok = [i for i in range(len(texts)) if i not in failures]
        width = self.backbone_ref.feature_dim or 0
        out = np.full((len(texts), width), np.nan, dtype=np.float32)
        if ok:
            result = extract_texts(
                [texts[i] for i in ok],
                [text_digest(texts[i]) for i in ok],
                self.backbone_ref,
                store=self.cache.store,
                progress=progress,
            )
            if out.shape[1] != result.features.shape[1]:
                out = np.full((len(texts), result.features.shape[1]), np.nan, dtype=np.float32)
            out[ok] = result.features
        return out, failures

    def uncalibrated_proba(self, features: np.ndarray) -> Probabilities:
        """Each task's head probabilities for embeddings (columns in the task's class order)."""
        return {t.name: task_proba(t, self.heads[t.name], features) for t in self.tasks}

    def proba_from_features(self, features: np.ndarray) -> Probabilities:
        """Each task's probabilities for embeddings, with the stored calibration applied."""
        raw = self.uncalibrated_proba(features)
        return {name: self.calibrated(name, proba) for name, proba in raw.items()}

    def linear_weights(self, task: str) -> np.ndarray | None:
        """(C, D) weights of ``task``'s logits on the pooled features, rows in the task's class
        order, when its head is linear in them (logistic heads); None otherwise."""
        return task_weights(self.task(task), self.heads[task])

    def calibrated(self, task: str, proba: np.ndarray) -> np.ndarray:
        """``task``'s head probabilities with its stored temperature(s) applied (as given when
        the task is not calibrated)."""
        return apply_calibration(proba, self.temperatures.get(task))

    def task_proba(
        self, paths: Sequence[Any], *, progress: bool = False, tta: str = "none"
    ) -> tuple[Probabilities, dict[int, str]]:
        """Each task's probabilities for image files (NaN rows for unreadable ones) and
        {index: reason}.  ``tta``: test-time augmentation, ``none``, ``flip``, ``crops`` or
        ``flip+crops``; the mean of per-view probabilities (see :mod:`headstart.features.tta`)."""
        probas, _, failures = self.scored(paths, progress=progress, tta=tta)
        return probas, failures

    def scored(
        self, paths: Sequence[Any], *, progress: bool = False, tta: str = "none"
    ) -> tuple[Probabilities, np.ndarray | None, dict[int, str]]:
        """:meth:`task_proba`'s probabilities and failures with the (N,) OOD scores between
        them (NaN for unreadable files; None without a scorer).  With ``tta`` the OOD score is
        the plain centre view's, the view its threshold was set on."""
        width = sum(len(t.classes) for t in self.tasks)
        if check_tta(tta) != "none" and self.modality == "text":
            raise ConfigError("test-time augmentation (--tta) is for image models; drop it")
        if tta != "none":
            views, failures = view_embeddings(
                paths, self.backbone_ref, tta, store=self.cache.store, progress=progress
            )
        else:
            plain, failures = self.embed(paths, progress=progress)
            views = plain[None]
        proba = np.full((len(paths), width), np.nan, dtype=np.float64)
        scorer, ood = self.ood, None if self.ood is None else np.full(len(paths), np.nan)
        ok = np.array([i not in failures for i in range(len(paths))], dtype=bool)
        if ok.any():
            # calibrated per view, then the mean over views (headstart.features.tta's rule)
            proba[ok] = np.mean([self._joined(view[ok]) for view in views], axis=0)
            if ood is not None and scorer is not None:
                ood[ok] = scorer.score(views[0][ok])
        return split_columns(self.tasks, proba), ood, failures

    def _joined(self, features: np.ndarray) -> np.ndarray:
        per_task = self.proba_from_features(features)
        return np.concatenate([per_task[t.name] for t in self.tasks], axis=1)

    def predict_proba(
        self,
        paths: Sequence[Any],
        *,
        task: str | None = None,
        progress: bool = False,
        tta: str = "none",
    ) -> tuple[np.ndarray, dict[int, str]]:
        """One task's probabilities (default: the first), as :meth:`task_proba` gives them."""
        probas, failures = self.task_proba(paths, progress=progress, tta=tta)
        return probas[self.task(task).name], failures

    def score_texts(self, texts: Sequence[str]) -> tuple[Probabilities, np.ndarray | None]:
        """A text model's probabilities and (N,) OOD scores (None without a scorer) for
        ``texts`` (e.g. served requests), with the encoder kept warm between calls; every text
        must be usable (see :func:`headstart.data.texts.text_problem`)."""
        from headstart.features.text_engine import TextFeatures  # when a text is served

        if not texts:
            empty = {t.name: np.empty((0, len(t.classes))) for t in self.tasks}
            return empty, None if self.ood is None else np.empty(0)
        if is_words(self.backbone_ref):  # TF-IDF: the head reads the texts themselves
            features = np.asarray(list(texts), dtype=object).reshape(-1, 1)
            return self.proba_from_features(features), None
        if self._text_runner is None:
            self._text_runner = TextFeatures(self.backbone_ref, self.cache.store)
        features = self._text_runner(list(texts))
        ood = None if self.ood is None else self.ood.score(features)
        return self.proba_from_features(features), ood

    def predict_images(self, images: Sequence[Any], *, engine: str = "auto") -> Probabilities:
        """Each task's probabilities for decoded RGB PIL images (e.g. uploads); the backbone is
        kept warm between calls."""
        return self.score_images(images, engine=engine)[0]

    def score_images(
        self, images: Sequence[Any], *, engine: str = "auto"
    ) -> tuple[Probabilities, np.ndarray | None]:
        """:meth:`predict_images`' probabilities and the images' (N,) OOD scores (None without
        a scorer), from one backbone pass."""
        if not images:
            empty = {t.name: np.empty((0, len(t.classes))) for t in self.tasks}
            return empty, None if self.ood is None else np.empty(0)
        if self._runner is None:  # each backbone part with its own preprocessing and runner
            self._runner = ImageFeatures(self.backbone_ref, self.cache.store, engine)
        features = self._runner(images)
        ood = None if self.ood is None else self.ood.score(features)
        return self.proba_from_features(features), ood

    def predict(
        self,
        images: Iterable[str | Path],
        *,
        top_k: int = 3,
        progress: bool = False,
        tta: str = "none",
    ) -> list[Prediction]:
        """Every task's answer for files, folders (searched recursively) and glob patterns;
        ``tta`` as in :meth:`task_proba`.  A text model takes texts, ``.txt`` files, folders
        of them and CSV files (their :attr:`text_column`), see
        :func:`headstart.inputs.expand_texts`; each answer carries its ``text``."""
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        check_tta(tta)
        if self.modality == "text":
            return self._predict_texts(images, top_k, progress, tta)
        paths = expand_inputs(images)
        probas, ood, failures = self.scored(paths, progress=progress, tta=tta)
        thresholds = {t.name: self.thresholds(t) for t in self.tasks}
        cut = self.ood_threshold
        scored = None if ood is None or cut is None else (ood, cut)
        return make_predictions(paths, probas, failures, self.tasks, thresholds, top_k, scored)

    def _predict_texts(
        self, items: Iterable[str | Path], top_k: int, progress: bool, tta: str
    ) -> list[Prediction]:
        rows = expand_texts(items, self.text_column)
        probas, ood, failures = self.scored([t for _, t, _ in rows], progress=progress, tta=tta)
        thresholds = {t.name: self.thresholds(t) for t in self.tasks}
        cut = self.ood_threshold
        scored = None if ood is None or cut is None else (ood, cut)
        sources = [source for source, _, _ in rows]
        answers = make_predictions(sources, probas, failures, self.tasks, thresholds, top_k, scored)
        return [replace(p, text=text) for p, (_, text, _) in zip(answers, rows, strict=True)]

    # -- metrics -------------------------------------------------------------------------
    def evaluate(
        self,
        paths: Sequence[Any],
        cells: Mapping[str, Sequence[Sequence[str]]],
        *,
        n_boot: int = 1000,
        progress: bool = False,
        tta: str = "none",
    ) -> tuple[dict[str, TaskMetrics], dict[int, str]]:
        """Metrics per task with bootstrap intervals: ``cells[task][i]`` holds image i's labels
        of that task (``paths``: texts for a text model).  Unreadable images are left out and
        returned as {index: reason}."""
        check_known_labels(self.tasks, cells)
        probas, failures = self.task_proba(paths, progress=progress, tta=tta)
        keep = [i for i in range(len(paths)) if i not in failures]
        if not keep:
            raise DataError("no readable image to evaluate on")
        metrics = {
            t.name: task_metrics(
                t,
                [cells[t.name][i] for i in keep],
                probas[t.name][keep],
                thresholds=self.thresholds(t),
                n_boot=n_boot,
            )
            for t in self.tasks
        }
        return metrics, failures

    # -- calibration ---------------------------------------------------------------------
    @property
    def temperatures(self) -> dict[str, Temperature]:
        """The stored temperature of each calibrated task (a list, one per label, for a
        multi-label task); empty when the model is not calibrated."""
        record = self._contents.info.get("calibration")
        if not isinstance(record, dict) or record.get("method") != "temperature":
            return {}
        if "tasks" not in record:  # bundles of format 1: one task, one temperature
            return {self.tasks[0].name: float(record["temperature"])}
        return read_temperatures(record["tasks"])

    def set_calibration(self, record: dict[str, Any] | None) -> None:
        """Set (or with None remove) the calibration record; :meth:`save` writes it."""
        if record is None:
            self._contents.info.pop("calibration", None)
        else:
            self._contents.info["calibration"] = dict(record)

    def save(self, path: Path) -> Path:
        """Write the bundle to ``path`` (atomic); returns the path."""
        c = self._contents
        kept = ("metrics", "config", "data_hash", "run", "calibration")
        extra = {k: v for k, v in c.info.items() if k in kept}
        files = [p.weights_path for p in c.backbone.members]
        return write_bundle(
            path,
            tasks=c.tasks,
            heads=c.heads,
            backbone=c.backbone,
            # each part's file when it is its safetensors (else the registry's, by its hash)
            backbone_weights=[f if f and f.suffix == ".safetensors" else None for f in files],
            extra=extra,
            ood=c.ood,
        )


def load(path: str | Path, *, cache: CacheRoot | None = None) -> Model:
    """Load a model bundle written by ``headstart fit`` (or :meth:`Model.save`); embeddings
    are cached under ``cache`` (default: the default cache root)."""
    path = Path(path)
    return Model(read_bundle(path), path, cache)
