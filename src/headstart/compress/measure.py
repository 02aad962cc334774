"""What every result is measured by, the same way: headline accuracy on the data's held-out
split (through :class:`headstart.Model`, as ``predict`` runs it), images per second of its
exported ONNX graph in onnxruntime on this machine, and that graph's size on disk."""

from __future__ import annotations

import time
from collections.abc import Sequence
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

__all__ = ["BATCH", "Measured", "images_per_s", "machine", "measure_result"]

#: Images per timed batch, the least time of one timing round (seconds), and the rounds.
BATCH, SECONDS, ROUNDS = 32, 2.0, 3


@dataclass(frozen=True)
class Measured:
    """One model's numbers: the first task's headline (accuracy or mAP) with its 95% CI on
    ``split`` (whose ``images`` then time every graph), its export ``onnx`` and its bytes."""

    metric: str
    accuracy: float
    ci: tuple[float, float]
    split: str
    images: list[Path]
    size_bytes: int
    backbone_bytes: int | None
    onnx: Path


def backbone_bytes(model: Model) -> int | None:
    """Bytes of the ONNX backbone(s) the model embeds with (its int8 copy, or the float32
    export the embedding engine caches); None when one is not on disk (the torch engine).  The
    whole graph's size also holds the heads and the OOD scorer's bank, which no method
    shrinks."""
    # lazy: the cache's key function; only this measurement needs it
    from headstart.features.store import model_key

    total = 0
    for ref in model.backbone_ref.members:
        path = ref.int8_path or model.cache.store.onnx_path(model_key(ref, "onnx"))
        if not path.is_file():
            return None
        total += path.stat().st_size
    return total


def machine() -> str:
    """The CPU's vector extensions and the threads used, as timings are labelled."""
    # lazy: torch is what knows the CPU's vector extensions (loaded by the work anyway)
    import torch

    return f"{torch.backends.cpu.get_cpu_capability()}, {physical_cores()} threads"


class _Timed:
    """One exported graph, warm, with a batch of real images per input."""

    def __init__(self, onnx: Path, timing_images: Images) -> None:
        self.classifier = OnnxClassifier(onnx, threads=physical_cores())
        preps = [prep for _, prep in self.classifier.inputs]
        batches = check_images(timing_images, preps, limit=BATCH).batches
        self.batches = [np.repeat(b, -(-BATCH // len(b)), axis=0)[:BATCH] for b in batches]
        self.classifier.predict_batch(self.batches)  # warm-up

    def rate(self, seconds: float) -> float:
        runs, start = 0, time.perf_counter()
        while True:
            self.classifier.predict_batch(self.batches)
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return runs * BATCH / elapsed


def images_per_s(onnx: Sequence[Path], timing_images: Images, rounds: int = ROUNDS) -> list[float]:
    """Images per second of each exported graph on the same real preprocessed images, timed
    in the same run: ``rounds`` rounds of whole batches for ``SECONDS`` each, the graphs taking
    turns (so a busy spell on a shared machine hits all of them), the best round of each."""
    timed = [_Timed(path, timing_images) for path in onnx]
    best = [0.0] * len(timed)
    for _ in range(rounds):
        for i, one in enumerate(timed):
            best[i] = max(best[i], one.rate(SECONDS))
    return best


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
    """Score ``model`` (read from ``bundle``) on ``data``'s ``split`` and export it to
    ``onnx`` (parity-checked); :func:`images_per_s` times the graphs afterwards, together."""
    evaluated = evaluate_data(model, data, split=split, n_boot=n_boot, progress=progress)
    task = model.tasks[0]
    metric, interval = headline(evaluated.metrics[task.name])
    export_model(bundle, output=onnx)
    images = [s.path for s in evaluated.manifest.split(evaluated.split)]
    return Measured(
        metric,
        float(interval.value),
        (float(interval.low), float(interval.high)),
        evaluated.split,
        images,
        onnx.stat().st_size,
        backbone_bytes(model),
        onnx,
    )
