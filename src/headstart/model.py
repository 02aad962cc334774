"""A fitted classifier: backbone reference + head + classes; predicts and evaluates images."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones import BackboneRef
from headstart.bundle import BundleContents, read_bundle, write_bundle
from headstart.errors import ConfigError, DataError
from headstart.evaluate import Metrics, evaluate_predictions
from headstart.features import EmbeddingStore, Runner, extract, feature_runner
from headstart.features.tta import check_tta, tta_proba
from headstart.inputs import expand_inputs

__all__ = ["Model", "Prediction", "load", "top_predictions"]


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, or the reason it could not be read."""

    path: Path
    top: list[tuple[str, float]]
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "top": [{"label": c, "probability": round(p, 6)} for c, p in self.top],
            "error": self.error,
        }


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
        return self._contents.classes

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
        proba, failures = self.predict_proba(paths, progress=progress, tta=tta)
        return top_predictions(paths, proba, failures, self.classes, top_k)

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

    def save(self, path: Path) -> Path:
        """Write the bundle to ``path`` (atomic); returns the path."""
        c = self._contents
        kept = ("metrics", "config", "data_hash", "run", "calibration")
        extra = {k: v for k, v in c.info.items() if k in kept}
        weights = c.backbone.weights_path
        return write_bundle(
            path,
            head=c.head,
            backbone=c.backbone,
            backbone_weights=weights if weights and weights.suffix == ".safetensors" else None,
            classes=c.classes,
            extra=extra,
        )


def load(path: str | Path) -> Model:
    """Load a model bundle written by ``headstart fit`` (or :meth:`Model.save`)."""
    path = Path(path)
    return Model(read_bundle(path), path)
