"""Static int8 quantization of a backbone's ONNX export (ONNX Runtime, QDQ format).

Every convolution but the stem's gets per-channel int8 weights and uint8 activations,
calibrated on up to 300 preprocessed training images (evenly spread over the training split,
in a fixed order, so the same data gives the same model).  The model is pre-processed first
(``quant_pre_process``: shape inference and graph folding), then quantized in the QDQ format,
which ONNX Runtime fuses into integer kernels.  :func:`quantize_ref` caches the result and
returns a :class:`~headstart.backbones.BackboneRef` carrying it (``int8_path``/``int8_sha256``),
which every extraction path then runs.

Settings (:data:`SETTINGS`), measured on mobilenet_v2, clothing_small (300 calibration images
from train; the 372 test images; a logistic probe on 1000 train images; CPU AVX2, no VNNI):

=======================================  ==========  ========  =====================
setting (QDQ, per-channel weights)       cosine mean cos min   probe acc (fp32 83.1)
=======================================  ==========  ========  =====================
MinMax, U8 act / S8 weights, all convs   0.924       0.660     82.5
Percentile 99.999, U8/S8, all convs      0.961       0.700     84.7
Percentile, U8/U8 (uint8 weights)        0.987       0.954     82.5
Percentile, U8/S8, first conv float      0.989       0.969     82.5
Percentile, U8/S8, first 3 convs float   0.993       0.986     82.8   <- kept
=======================================  ==========  ========  =====================

The drift of int8 weights on AVX2 comes mostly from the stem: without VNNI, ONNX Runtime's
u8 x s8 kernel adds pairs of products in int16 (``vpmaddubsw``), which saturates on the
normalised image input; keeping the first three convolutions (the image's and the first
block's) in float32 removes it, and costs no measurable speed.  ``reduce_range`` (7-bit
weights) drifted more (cosine 0.978); MinMax ranges are too wide (outliers).  Speed on this
2-core AVX2 machine is that of float32 (within the noise of a shared machine, about 0.9-1.15x):
int8 pays off on CPUs with VNNI (AVX512-VNNI, AVX-VNNI) or ARM dot-product instructions.
Model size: 8.9 MB -> 2.6 MB.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from headstart.backbones.registry import BackboneRef
from headstart.backbones.spec import file_sha256, fuse
from headstart.data.images import load_rgb
from headstart.errors import ConfigError, ImageError
from headstart.features.onnx_engine import cached_export, export_onnx
from headstart.features.store import EmbeddingStore, model_key
from headstart.fsutil import FILE_MODE, read_entry, seal

__all__ = [
    "CALIBRATION_IMAGES",
    "SETTINGS",
    "Int8Settings",
    "calibration_sample",
    "float_ref",
    "quantize_ref",
    "quantize_static",
]

#: How many training images calibrate the activation ranges (at most; evenly spread).
CALIBRATION_IMAGES = 300
INPUT_NAME = "images"
#: Images per calibration step (bounds the memory ORT's calibrators hold at once).
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class Int8Settings:
    """How a model is quantized (every field keys the cached int8 model).

    ``method``: the calibration rule for activation ranges (``minmax``, ``percentile``,
    ``entropy``); ``percentile``: the percentile kept by ``percentile``; ``activations`` /
    ``weights``: ``uint8`` or ``int8``; ``per_channel``: one weight scale per output channel;
    ``exclude_first``: how many leading convolutions stay float32 (the stem: the image input's
    convolution and the first block); ``exclude_last``: the nodes after the last convolution
    (pooling, flatten: the features themselves) stay float32; ``extra``: ONNX Runtime's
    ``extra_options``."""

    method: str = "percentile"
    percentile: float = 99.999
    activations: str = "uint8"
    weights: str = "int8"
    per_channel: bool = True
    reduce_range: bool = False
    exclude_first: int = 3
    exclude_last: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        """A stable text of the settings (part of the cached int8 model's key)."""
        return json.dumps(asdict(self), sort_keys=True)


#: The settings headstart uses (see the module docstring).
SETTINGS = Int8Settings()


@contextmanager
def _quiet() -> Iterator[None]:
    # quant_pre_process and quantize_static log warnings on the root logger, and the histogram
    # calibrators print progress to stdout (which would land in `headstart predict -f json`)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def calibration_sample(items: Sequence[Any], n: int = CALIBRATION_IMAGES) -> list[Any]:
    """Up to ``n`` of ``items``, evenly spread and in order (deterministic)."""
    if len(items) <= n:
        return list(items)
    picks = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in sorted(set(picks.tolist()))]


class _Reader:
    """The calibration data reader onnxruntime.quantization asks for batches, one small batch
    per ``collect_data`` call (``CalibStridedMinMax`` = 1): ORT's histogram calibrators keep
    every intermediate output of a call in memory (gigabytes for a few hundred images) and
    merge their histograms across calls."""

    def __init__(self, batches: Iterable[np.ndarray], name: str) -> None:
        images = np.concatenate([np.asarray(b, dtype=np.float32) for b in batches])
        self._batches = [
            np.ascontiguousarray(images[i : i + CALIBRATION_BATCH])
            for i in range(0, len(images), CALIBRATION_BATCH)
        ]
        self._name = name
        self._at, self._stop = 0, len(self._batches)

    def __len__(self) -> int:
        return len(self._batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._at, self._stop = start_index, min(end_index, len(self._batches))

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._at >= self._stop:
            return None
        self._at += 1
        return {self._name: self._batches[self._at - 1]}


def _excluded(model: Any, settings: Int8Settings, prefix: str | None) -> list[str]:
    """Names of the nodes to keep in float32."""
    nodes = list(model.graph.node)
    keep = [n.name for n in nodes if prefix and n.name.startswith(prefix)]
    convs = [i for i, n in enumerate(nodes) if n.op_type == "Conv"]
    keep += [nodes[i].name for i in convs[: settings.exclude_first]]
    if settings.exclude_last and convs:
        keep += [n.name for n in nodes[convs[-1] + 1 :]]
    return keep


def quantize_static(
    source_onnx: bytes | Path,
    batches: Iterable[np.ndarray],
    dest: Path,
    exclude_prefix: str | None = None,
    settings: Int8Settings = SETTINGS,
    input_name: str = INPUT_NAME,
) -> Path:
    """Write ``source_onnx`` (a float32 model, its file or bytes) quantized to static int8
    (QDQ, per-channel weights, convolutions included) to ``dest``, atomically; returns it.

    ``batches``: preprocessed float32 (N, 3, H, W) calibration batches for the input
    ``input_name``.  Nodes whose names start with ``exclude_prefix`` stay float32 (e.g. an
    exported classifier's head or OOD scorer)."""
    # lazy: onnx/onnxruntime take a second to import; only this path needs them
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
    )
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    methods = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }
    extra: dict[str, Any] = {**settings.extra, "CalibStridedMinMax": 1}
    if settings.method == "percentile":
        extra.setdefault("CalibPercentile", settings.percentile)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".int8.", dir=dest.parent) as work:
        source = Path(work) / "fp32.onnx"
        if isinstance(source_onnx, bytes):
            source.write_bytes(source_onnx)
        else:
            source.write_bytes(Path(source_onnx).read_bytes())
        prepared = Path(work) / "prepared.onnx"
        out = Path(work) / "int8.onnx"
        with _quiet():
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            keep = _excluded(onnx.load(str(prepared)), settings, exclude_prefix)
            ort_quantize_static(
                str(prepared),
                str(out),
                _Reader(batches, input_name),
                quant_format=QuantFormat.QDQ,
                per_channel=settings.per_channel,
                reduce_range=settings.reduce_range,
                activation_type=types[settings.activations],
                weight_type=types[settings.weights],
                calibrate_method=methods[settings.method],
                nodes_to_exclude=keep,
                extra_options=extra,
            )
        _copy_metadata(source, out)
        os.chmod(out, FILE_MODE)
        os.replace(out, dest)
    return dest


def _copy_metadata(source: Path, path: Path) -> None:
    """Keep the float32 model's metadata_props (an exported classifier's recipe keys)."""
    # lazy: onnx takes a second to import; only this path needs it
    import onnx

    props = {p.key: p.value for p in onnx.load(str(source)).metadata_props}
    if not props:
        return
    model = onnx.load(str(path))
    have = {p.key for p in model.metadata_props}
    for key, value in props.items():
        if key not in have:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(model, str(path))


def float_ref(ref: BackboneRef) -> BackboneRef:
    """``ref`` without int8 models (each part's, for a fusion): the float32 backbone."""
    if ref.is_fused:
        return fuse([float_ref(part) for part in ref.parts])
    return replace(ref, int8_path=None, int8_sha256="")


def quantize_ref(
    ref: BackboneRef,
    calibration_paths: Sequence[Path],
    store: EmbeddingStore,
    *,
    settings: Int8Settings = SETTINGS,
    batch_size: int = 32,
) -> BackboneRef:
    """``ref`` carrying a static int8 model of its backbone (each part's, for a fusion),
    calibrated on up to :data:`CALIBRATION_IMAGES` of ``calibration_paths`` (evenly spread;
    files that cannot be decoded are skipped).

    The int8 model is built from the float32 ONNX export and cached in ``store``'s onnx folder
    (verified on read) under the float32 model key, the calibration files' content digests
    and ``settings``: the same data gives the same file, any change a new one."""
    if ref.is_fused:
        parts = [
            quantize_ref(p, calibration_paths, store, settings=settings, batch_size=batch_size)
            for p in ref.parts
        ]
        return fuse(parts)
    ref = float_ref(ref)
    sample = calibration_sample([Path(p) for p in calibration_paths])
    shas = [file_sha256(p) for p in sample]
    text = json.dumps(
        {"fp32": model_key(ref, "onnx"), "calibration": shas, "settings": settings.key()},
        sort_keys=True,
    )
    dest = store.onnx_path(hashlib.sha256(text.encode()).hexdigest()[:24] + ".int8")
    model = read_entry(dest)
    if model is None:
        fp32 = cached_export(
            store.onnx_path(model_key(ref, "onnx")), lambda path: export_onnx(ref.build(), path)
        )
        assert fp32 is not None  # export_onnx returns its path or raises
        batches = _calibration_batches(ref, sample, batch_size)
        quantize_static(fp32, batches, dest, settings=settings)
        model = dest.read_bytes()
        seal(dest, hashlib.sha256(model).hexdigest())
    return replace(ref, int8_path=dest, int8_sha256=hashlib.sha256(model).hexdigest())


def _calibration_batches(
    ref: BackboneRef, paths: Sequence[Path], batch_size: int
) -> Iterator[np.ndarray]:
    """Preprocessed batches of the readable ``paths`` (a one-line error when none is)."""
    prep = ref.preprocessing
    batch: list[np.ndarray] = []
    seen = 0
    for path in paths:
        try:
            batch.append(prep(load_rgb(path, draft_size=prep.resize)))
        except (ImageError, OSError):
            continue  # an unreadable image calibrates nothing; the others suffice
        seen += 1
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)
    if not seen:
        raise ConfigError("int8 calibration needs readable training images; none could be read")
