"""Predict with an exported ``model.onnx`` through onnxruntime (``predict --runtime onnx``).

The file carries its classes and preprocessing in its metadata, so it runs without the bundle;
given a bundle folder, its ``model.onnx`` is exported first when missing or made from another
head.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.preprocessing import Preprocessing
from headstart.bundle import read_bundle
from headstart.errors import BundleError, ConfigError
from headstart.export.images import Images, decode_batch
from headstart.export.onnx_model import METADATA_KEY, export_model
from headstart.features.tta import check_tta, decode_views, tta_views
from headstart.inputs import expand_inputs
from headstart.model import Prediction, top_predictions

__all__ = ["OnnxClassifier", "load_onnx"]

_BATCH = 32


class OnnxClassifier:
    """An exported whole model (see :func:`headstart.export.export_model`) in onnxruntime."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from headstart.features.onnx_engine import OnnxFeatures

        self.path = Path(path)
        self.info = read_metadata(self.path)
        try:
            self.classes: list[str] = [str(c) for c in self.info["classes"]]
            self.preprocessing = Preprocessing.from_dict(
                {k: v for k, v in self.info["preprocessing"].items() if k != "steps"}
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise BundleError(f"{self.path}: bad headstart metadata ({exc})") from None
        self._session = OnnxFeatures(self.path, threads=threads)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities (N, C) for a preprocessed float32 batch (N, 3, crop, crop)."""
        return self._session(batch).astype(np.float64)

    def predict_proba(
        self, paths: list[Path], tta: str = "none"
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Probabilities per file (NaN rows for unreadable ones) and {index: reason}; ``tta``
        averages views as :meth:`headstart.Model.predict_proba` does."""
        if tta != "none":
            return self._tta_proba(paths, tta)
        proba = np.full((len(paths), len(self.classes)), np.nan)
        failures: dict[int, str] = {}
        for start in range(0, len(paths), _BATCH):
            kept, batch, failed = decode_batch(paths[start : start + _BATCH], self.preprocessing)
            failures.update({start + i: why for i, why in failed.items()})
            if kept:
                proba[[start + i for i in kept]] = self.predict_batch(batch)
        return proba, failures

    def _tta_proba(self, paths: list[Path], tta: str) -> tuple[np.ndarray, dict[int, str]]:
        views, size = tta_views(tta), self.preprocessing.crop
        proba = np.full((len(paths), len(self.classes)), np.nan)
        failures: dict[int, str] = {}
        step = max(1, _BATCH // len(views))
        for start in range(0, len(paths), step):
            chunk = paths[start : start + step]
            kept, arrays, failed = decode_views(chunk, self.preprocessing, views)
            failures.update({start + i: why for i, why in failed.items()})
            if kept:
                p = self.predict_batch(arrays.reshape(-1, 3, size, size))
                proba[[start + i for i in kept]] = p.reshape(len(kept), len(views), -1).mean(1)
        return proba, failures

    def predict(
        self, images: Iterable[str | Path], *, top_k: int = 3, tta: str = "none"
    ) -> list[Prediction]:
        """Top-k per image, like :meth:`headstart.Model.predict` (error rows included)."""
        if top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {top_k}")
        check_tta(tta)  # a bad mode fails before any decoding
        paths = expand_inputs(images)
        proba, failures = self.predict_proba(paths, tta)
        return top_predictions(paths, proba, failures, self.classes, top_k)


def read_metadata(path: Path) -> dict[str, Any]:
    """The headstart document stored in an exported model's metadata_props."""
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
    doc = json.loads(props[METADATA_KEY])
    if not isinstance(doc, dict):
        raise BundleError(f"{path}: bad headstart metadata")
    return doc


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
    contents_info = read_bundle(path).info
    onnx_path = path / "model.onnx"
    head_sha = contents_info.get("files", {}).get("head.safetensors")
    reason = None
    if not onnx_path.is_file():
        reason = "not exported yet"
    elif read_metadata(onnx_path).get("bundle", {}).get("head_sha256") != head_sha:
        reason = "made from another version of this bundle"
    if reason is not None:
        if notify is not None:
            notify(f"exporting {onnx_path} ({reason}) ...")
        result = export_model(path, check_images=check_images)
        if notify is not None:
            notify(f"parity: max abs difference {result.max_abs_diff:.2e} on "
                   f"{result.n_check_images} images")  # fmt: skip
    return OnnxClassifier(onnx_path)
