"""Predict with an exported ``model.onnx`` through onnxruntime (``predict --runtime onnx``).

The file carries its tasks (classes, thresholds), calibration and preprocessing in its metadata,
so it runs without the bundle and answers exactly as :meth:`headstart.Model.predict` does: the
same per-task probabilities (calibration applied to each view, before any TTA mean), the same
OOD scores (the graph's ``ood_score`` output, of the centre view) and the same
:class:`~headstart.model.Prediction` objects.  Given a bundle folder, its ``model.onnx`` is
exported first when missing or made from another version of the bundle.  A fused backbone's
graph takes one batch per input; each file is decoded once per input, with its part's own
preprocessing.  A text model's graph (document ``"modality": "text"``) takes texts: they are
tokenized with the tokenizer written beside the file (checked against its recorded sha256) and
read as :meth:`headstart.Model.predict` reads them (texts, ``.txt`` files, folders, CSV files).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.preprocessing import Preprocessing
from headstart.bundle import read_bundle
from headstart.data.manifest import Task, pick_task
from headstart.data.texts import text_problem
from headstart.errors import BundleError, ConfigError
from headstart.export.document import (
    METADATA_KEY,
    OOD_OUTPUT,
    describe,
    exported_tasks,
    temperatures_of,
)
from headstart.export.images import Images, decode_inputs, intersect
from headstart.export.onnx_model import export_model
from headstart.export.tokens import encode, load_tokenizer
from headstart.features.onnx_engine import INPUT_NAME, OnnxFeatures
from headstart.features.tta import check_tta, decode_views, tta_views
from headstart.fsutil import file_digest
from headstart.inputs import expand_inputs, expand_texts
from headstart.model import Prediction, make_predictions, split_columns
from headstart.stats.temperature import apply_calibration

__all__ = ["OnnxClassifier", "load_onnx", "read_metadata"]

_BATCH = 32
Probabilities = dict[str, np.ndarray]


class OnnxClassifier:
    """An exported whole model (see :func:`headstart.export.export_model`) in onnxruntime.

    ``tasks``, ``classes`` (the first task's) and :meth:`thresholds` as on
    :class:`headstart.Model`; :meth:`task_proba`, :meth:`predict_proba` and :meth:`predict`
    answer as its methods of the same names do."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        self.path = Path(path)
        self.info = read_metadata(self.path)
        self.modality = "text" if self.info.get("modality") == "text" else "image"
        """``"image"`` or ``"text"``: what the model reads."""
        self._tokenizer: Any = None
        try:
            exported = exported_tasks(self.info)
            self.inputs = [] if self.modality == "text" else _inputs(self.info)
            """The graph's inputs in order: (name, preprocessing), one per backbone part (none
            for a text model: its inputs are the tokenizer's)."""
            if self.modality == "text":
                block = self.info["tokenizer"]
                file = self.path.parent / str(block["file"])
                self._tokenizer = load_tokenizer(file, str(block["sha256"]))
                self.text_column = str(self.info.get("text_column") or "text")
                """A text model's CSV text column."""
        except (KeyError, TypeError, AttributeError, BundleError) as exc:
            raise BundleError(f"{self.path}: bad headstart metadata ({exc})") from None
        self.preprocessing = self.inputs[0][1] if self.inputs else None
        """The (first) input's preprocessing (None for a text model)."""
        self.tasks: list[Task] = [task for task, _, _ in exported]
        self._outputs = [name for _, name, _ in exported]
        self._thresholds = {
            task.name: None if cut is None else np.asarray(cut, dtype=np.float64)
            for task, _, cut in exported
        }
        self.temperatures = temperatures_of(self.info)
        self.ood_threshold = _ood_threshold(self.info, self.path)
        """The OOD score above which an image is flagged (None: the model has no scorer)."""
        self._session = OnnxFeatures(self.path, threads=threads).session
        wanted = self._outputs + ([OOD_OUTPUT] if self.ood_threshold is not None else [])
        missing = sorted(set(wanted) - {o.name for o in self._session.get_outputs()})
        if missing:
            raise BundleError(f"{self.path}: the graph lacks the outputs {', '.join(missing)}")

    @property
    def classes(self) -> list[str]:
        """The first task's classes (every task's are in :attr:`tasks`)."""
        return list(self.tasks[0].classes)

    def task(self, name: str | None = None) -> Task:
        """The task called ``name`` (None: the first)."""
        return pick_task(self.tasks, name)

    def thresholds(self, task: Task) -> np.ndarray | None:
        """A multi-label task's decision thresholds (None for a multi-class task)."""
        return self._thresholds[task.name]

    @property
    def _width(self) -> int:
        return sum(len(t.classes) for t in self.tasks)

    def predict_batch(self, batch: np.ndarray | Sequence[np.ndarray]) -> Probabilities:
        """Each task's calibrated probabilities for a preprocessed float32 batch
        (N, 3, crop, crop) -- one per input, in order, for a fused backbone -- columns in
        the task's class order."""
        return self.score_batch(batch)[0]

    def score_batch(
        self, batch: np.ndarray | Sequence[np.ndarray]
    ) -> tuple[Probabilities, np.ndarray | None]:
        """:meth:`predict_batch`'s probabilities and the batch's (N,) OOD scores (None when
        the model has no scorer), from one run of the graph."""
        batches = [batch] if isinstance(batch, np.ndarray) else list(batch)
        if self.modality == "text":
            raise ConfigError(f"{self.path} classifies texts: use score_texts or predict")
        if len(batches) != len(self.inputs):
            raise ConfigError(f"the model takes {len(self.inputs)} batches, got {len(batches)}")
        feed = {
            name: np.ascontiguousarray(b, dtype=np.float32)
            for (name, _), b in zip(self.inputs, batches, strict=True)
        }
        return self._run(feed)

    def _run(self, feed: dict[str, np.ndarray]) -> tuple[Probabilities, np.ndarray | None]:
        scored = self.ood_threshold is not None
        outputs = self._session.run(self._outputs + ([OOD_OUTPUT] if scored else []), feed)
        out: Probabilities = {}
        for task, raw in zip(self.tasks, outputs, strict=False):
            raw = np.asarray(raw, dtype=np.float64)
            out[task.name] = apply_calibration(raw, self.temperatures.get(task.name))
        return out, np.asarray(outputs[-1], dtype=np.float64).ravel() if scored else None

    def score_texts(self, texts: Sequence[str]) -> tuple[Probabilities, np.ndarray | None]:
        """A text model's calibrated probabilities and (N,) OOD scores (None without a
        scorer) for usable texts (see :func:`headstart.data.texts.text_problem`), as
        :meth:`headstart.Model.score_texts` gives them."""
        if self._tokenizer is None:
            raise ConfigError(f"{self.path} classifies images, not texts")
        probas = {t.name: np.empty((len(texts), len(t.classes))) for t in self.tasks}
        ood = None if self.ood_threshold is None else np.empty(len(texts))
        if not texts:
            return probas, ood
        ids, mask = encode(self._tokenizer, [t.strip() for t in texts])
        # longest first, each batch cut to its own longest text: little padding is computed
        lengths = mask.sum(axis=1)
        order = np.argsort(-lengths, kind="stable")
        for start in range(0, len(texts), _BATCH):
            rows = order[start : start + _BATCH]
            width = max(1, int(lengths[rows[0]]))
            feed = {"input_ids": ids[rows, :width], "attention_mask": mask[rows, :width]}
            per_task, scores = self._run(feed)
            for name, p in per_task.items():
                probas[name][rows] = p
            if ood is not None and scores is not None:
                ood[rows] = scores
        return probas, ood

    def _joined(self, batch: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        per_task, ood = self.score_batch(batch)
        return np.concatenate([per_task[t.name] for t in self.tasks], axis=1), ood

    def _scored_texts(
        self, texts: Sequence[str]
    ) -> tuple[Probabilities, np.ndarray | None, dict[int, str]]:
        texts = [str(t).strip() for t in texts]
        failures = {i: why for i, t in enumerate(texts) if (why := text_problem(t)) is not None}
        ok = [i for i in range(len(texts)) if i not in failures]
        proba = np.full((len(texts), self._width), np.nan)
        ood = np.full(len(texts), np.nan) if self.ood_threshold is not None else None
        if ok:
            per_task, scores = self.score_texts([texts[i] for i in ok])
            proba[ok] = np.concatenate([per_task[t.name] for t in self.tasks], axis=1)
            if ood is not None and scores is not None:
                ood[ok] = scores
        return split_columns(self.tasks, proba), ood, failures

    def task_proba(
        self, paths: Sequence[Any], tta: str = "none"
    ) -> tuple[Probabilities, dict[int, str]]:
        """Each task's probabilities per file (NaN rows for unreadable ones; a text model:
        per text, NaN for unusable ones) and {index: reason}; ``tta`` averages views as
        :meth:`headstart.Model.task_proba` does."""
        probas, _, failures = self.scored(paths, tta)
        return probas, failures

    def scored(
        self, paths: Sequence[Any], tta: str = "none"
    ) -> tuple[Probabilities, np.ndarray | None, dict[int, str]]:
        """:meth:`task_proba`'s probabilities and failures with the (N,) OOD scores between
        them (NaN for unreadable files; None without a scorer), as
        :meth:`headstart.Model.scored` gives them."""
        if self.modality == "text":
            if check_tta(tta) != "none":
                raise ConfigError("test-time augmentation (--tta) is for image models; drop it")
            return self._scored_texts(paths)
        paths = list(paths)
        proba = np.full((len(paths), self._width), np.nan)
        ood = np.full(len(paths), np.nan) if self.ood_threshold is not None else None
        failures: dict[int, str] = {}
        if check_tta(tta) != "none":
            self._tta_into(proba, ood, failures, paths, tta)
            return split_columns(self.tasks, proba), ood, failures
        preps = [prep for _, prep in self.inputs]
        for start in range(0, len(paths), _BATCH):
            kept, batches, failed = decode_inputs(paths[start : start + _BATCH], preps)
            failures.update({start + i: why for i, why in failed.items()})
            if kept:
                rows = [start + i for i in kept]
                proba[rows], scores = self._joined(batches)
                if ood is not None and scores is not None:
                    ood[rows] = scores
        return split_columns(self.tasks, proba), ood, failures

    def _tta_into(
        self,
        proba: np.ndarray,
        ood: np.ndarray | None,
        failures: dict[int, str],
        paths: list[Path],
        tta: str,
    ) -> None:
        views = tta_views(tta)
        step = max(1, _BATCH // len(views))
        for start in range(0, len(paths), step):
            chunk = paths[start : start + step]
            kept, arrays, failed = intersect(
                [decode_views(chunk, prep, views) for _, prep in self.inputs]
            )
            failures.update({start + i: why for i, why in failed.items()})
            if kept:
                rows = [start + i for i in kept]
                batches = [a.reshape(-1, *a.shape[2:]) for a in arrays]  # (n * V, 3, c, c)
                # calibrated per view, then averaged: the rule of headstart.features.tta
                p, scores = self._joined(batches)
                proba[rows] = p.reshape(len(kept), len(views), -1).mean(1)
                if ood is not None and scores is not None:  # the centre view's (view 0)
                    ood[rows] = scores.reshape(len(kept), len(views))[:, 0]

    def predict_proba(
        self, paths: Sequence[Any], tta: str = "none", *, task: str | None = None
    ) -> tuple[np.ndarray, dict[int, str]]:
        """One task's probabilities (default: the first), as :meth:`task_proba` gives them."""
        chosen = self.task(task)
        probas, failures = self.task_proba(paths, tta)
        return probas[chosen.name], failures

    def predict(
        self, images: Iterable[str | Path], *, top_k: int = 3, tta: str = "none"
    ) -> list[Prediction]:
        """Every task's answer per image, like :meth:`headstart.Model.predict` (error rows
        included; multi-label tasks choose the labels at or above their thresholds).  A text
        model takes texts, ``.txt`` files, folders of them and CSV files (its
        ``text_column``); each answer carries its ``text``."""
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        check_tta(tta)  # a bad mode fails before any decoding
        scored_cut = self.ood_threshold
        if self.modality == "text":
            rows = expand_texts(images, self.text_column)
            probas, ood, failures = self.scored([t for _, t, _ in rows], tta)
            scored = None if ood is None or scored_cut is None else (ood, scored_cut)
            sources = [source for source, _, _ in rows]
            answers = make_predictions(
                sources, probas, failures, self.tasks, self._thresholds, top_k, scored
            )
            return [replace(p, text=t) for p, (_, t, _) in zip(answers, rows, strict=True)]
        paths = expand_inputs(images)
        probas, ood, failures = self.scored(paths, tta)
        scored = None if ood is None or self.ood_threshold is None else (ood, self.ood_threshold)
        return make_predictions(
            paths, probas, failures, self.tasks, self._thresholds, top_k, scored
        )


def _inputs(doc: dict[str, Any]) -> list[tuple[str, Preprocessing]]:
    """The graph's inputs a document records: a fused backbone's ``inputs``, else the one
    input ``images`` with the document's ``preprocessing``."""

    def prep(block: dict[str, Any]) -> Preprocessing:
        return Preprocessing.from_dict({k: v for k, v in block.items() if k != "steps"})

    if "inputs" in doc:
        inputs = [(str(entry["name"]), prep(entry["preprocessing"])) for entry in doc["inputs"]]
        if not inputs:
            raise BundleError("no input")
        return inputs
    return [(INPUT_NAME, prep(doc["preprocessing"]))]


def _ood_threshold(doc: dict[str, Any], path: Path) -> float | None:
    """The threshold of the document's OOD block (None: the model has no scorer)."""
    block = doc.get("ood")
    if block is None:
        return None
    try:
        return float(block["threshold"])
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{path}: bad OOD block in the headstart metadata") from None


def read_metadata(path: Path) -> dict[str, Any]:
    """The headstart document stored in an exported model's metadata_props."""
    # lazy: onnx/onnxruntime take a second to import; only this path needs them
    import onnx

    if not path.is_file():
        raise BundleError(f"exported model not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # any parse failure: a damaged or foreign file
        raise BundleError(f"{path} is not a readable ONNX model: {type(exc).__name__}") from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise BundleError(f"{path} was not exported by headstart (no '{METADATA_KEY}' metadata)")
    try:
        doc = json.loads(props[METADATA_KEY])
    except json.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise BundleError(f"{path}: bad headstart metadata")
    return doc


def _stale(onnx_path: Path, fresh: dict[str, Any]) -> str | None:
    """Why the exported file no longer answers as the bundle does (None: it still does)."""
    if not onnx_path.is_file():
        return "not exported yet"
    doc = read_metadata(onnx_path)
    if doc.get("bundle", {}).get("head_sha256") != fresh["bundle"]["head_sha256"]:
        return "made from another version of this bundle"
    version = doc.get("format_version")
    if "tasks" not in doc or not isinstance(version, int) or version < fresh["format_version"]:
        # e.g. format 2 described the preprocessing too loosely to reproduce it
        return "exported by an older headstart"
    if doc["tasks"] != fresh["tasks"] or doc.get("calibration") != fresh["calibration"]:
        return "the bundle's tasks, thresholds or calibration changed since"
    if doc.get("ood") != fresh["ood"]:
        return "the bundle's out-of-distribution scorer changed since"
    if fresh.get("modality") == "text":
        block = doc.get("tokenizer") or {}
        if block.get("sha256") != fresh["tokenizer"]["sha256"]:
            return "the bundle's tokenizer changed since"
        file = onnx_path.parent / str(block.get("file"))
        if not file.is_file() or file_digest(file) != block["sha256"]:
            return f"its tokenizer {file.name} is missing or changed"
    return None


def load_onnx(
    model: str | Path,
    *,
    check_images: Images | None = None,
    notify: Callable[[str], None] | None = None,
) -> OnnxClassifier:
    """An :class:`OnnxClassifier` for an exported ``.onnx`` file or a bundle folder; a bundle's
    ``model.onnx`` is exported (with its parity check) when missing or stale."""
    path = Path(model)
    if path.suffix == ".onnx" and path.is_file():
        return OnnxClassifier(path)
    onnx_path = path / "model.onnx"
    # JSON round trip: the document as the file stores it (tuples become lists)
    fresh = json.loads(json.dumps(describe(read_bundle(path))))
    reason = _stale(onnx_path, fresh)
    if reason is not None:
        if notify is not None:
            notify(f"exporting {onnx_path} ({reason}) ...")
        result = export_model(path, check_images=check_images)
        if notify is not None:
            notify(f"parity: max abs difference {result.max_abs_diff:.2e} on "
                   f"{result.n_check_images} images")  # fmt: skip
    return OnnxClassifier(onnx_path)
