"""What every result is measured by, the same way: headline accuracy on the data's held-out
split (through :class:`headstart.Model`, as ``predict`` runs it), images per second of its
exported ONNX graph in onnxruntime on this machine, and that graph's size on disk."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.evaluation import evaluate_data
from headstart.export import export_model
from headstart.export.images import Images, check_images
from headstart.export.runtime import OnnxClassifier
from headstart.features.onnx_engine import physical_cores
from headstart.model import Model
from headstart.stats import headline

__all__ = ["BATCH", "Measured", "machine", "measure_result"]

#: Images per timed batch, and the least time each model is timed (seconds).
BATCH, SECONDS = 32, 3.0


@dataclass(frozen=True)
class Measured:
    """One model's numbers: the first task's headline (accuracy or mAP) with its 95% CI on
    ``split``, images/s of ``onnx`` and its bytes."""

    metric: str
    accuracy: float
    ci: tuple[float, float]
    split: str
    n_images: int
    images_per_s: float
    size_bytes: int
    onnx: Path


def machine() -> str:
    """The CPU's vector extensions and the threads used, as timings are labelled."""
    # lazy: torch is what knows the CPU's vector extensions (loaded by the work anyway)
    import torch

    return f"{torch.backends.cpu.get_cpu_capability()}, {physical_cores()} threads"


def images_per_s(onnx: Path, timing_images: Images) -> float:
    """Images per second of the exported graph on real preprocessed images: one warm-up
    batch, then whole batches for at least ``SECONDS``."""
    classifier = OnnxClassifier(onnx, threads=physical_cores())
    preps = [prep for _, prep in classifier.inputs]
    batches = check_images(timing_images, preps, limit=BATCH).batches
    reps = [np.repeat(b, -(-BATCH // len(b)), axis=0)[:BATCH] for b in batches]
    classifier.predict_batch(reps)
    runs, start = 0, time.perf_counter()
    while True:
        classifier.predict_batch(reps)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= SECONDS:
            return runs * BATCH / elapsed


def measure_result(
    model: Model,
    data: Path,
    onnx: Path,
    *,
    split: str,
    n_boot: int,
    progress: bool,
    bundle: Path,
) -> Measured:
    """Score ``model`` (read from ``bundle``) on ``data``'s ``split``, export it to ``onnx``
    (parity-checked) and time that graph on the split's images."""
    evaluated = evaluate_data(model, data, split=split, n_boot=n_boot, progress=progress)
    task = model.tasks[0]
    metric, interval = headline(evaluated.metrics[task.name])
    export_model(bundle, output=onnx)
    images = [s.path for s in evaluated.manifest.samples]
    speed = images_per_s(onnx, images)
    return Measured(
        metric,
        float(interval.value),
        (float(interval.low), float(interval.high)),
        evaluated.split,
        len(images),
        speed,
        onnx.stat().st_size,
        onnx,
    )
