"""Model throughput: torch eager vs the exported ONNX model (fp32 and int8) in onnxruntime.

    python benchmarks/export.py [--model RUN/model] [--images DIR] [--n 256]

The same images, decoded and preprocessed once beforehand (pure model throughput), go through
(a) torch eager, the plain baseline: the bundle's backbone + head as torch modules, batch 32,
    torch.inference_mode, torch threads = physical cores;
(b) onnxruntime, the whole model exported by ``headstart export`` (float32);
(c) onnxruntime, its dynamic int8 copy (``--quantize int8``).
Accuracy of each is measured on the labelled images (folders named after the classes of the
model's first task, as the export check does; a model with several tasks is timed whole, all its
outputs side by side).  Without ``--model`` a quick model is fitted on the demo photos (train
split, all classes) first.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from headstart.data import Task


def _time(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, size: int) -> float:
    """Seconds for all of ``batch`` in chunks of ``size`` (after one warm-up chunk)."""
    run(batch[:size])
    start = time.perf_counter()
    for i in range(0, len(batch), size):
        run(batch[i : i + size])
    return time.perf_counter() - start


def _best_rates(
    runners: list[tuple[str, Callable[[np.ndarray], np.ndarray]]],
    batch: np.ndarray,
    size: int,
    repeat: int,
) -> list[float]:
    """Best img/s of each runner over ``repeat`` rounds, interleaved so load drifts hit all."""
    best = [0.0] * len(runners)
    for _ in range(repeat):
        for i, (_, run) in enumerate(runners):
            best[i] = max(best[i], len(batch) / _time(run, batch, size))
    return best


def _proba(run: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, size: int) -> np.ndarray:
    return np.concatenate([run(batch[i : i + size]) for i in range(0, len(batch), size)])


def _onnx_runner(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """The exported model in onnxruntime: every task's output side by side (as torch's)."""
    from headstart.features.onnx_engine import INPUT_NAME, OnnxFeatures

    session = OnnxFeatures(path, threads).session

    def run(batch: np.ndarray) -> np.ndarray:
        outputs = session.run(None, {INPUT_NAME: np.ascontiguousarray(batch)})
        return outputs[0] if len(outputs) == 1 else np.concatenate(outputs, axis=1)

    return run


def _quick_model(root: Path) -> Path:
    import headstart
    from headstart.demo import demo_data_dir

    print("no --model: fitting a logistic head on the demo train photos ...", flush=True)
    return headstart.fit(demo_data_dir() / "train", root / "run", progress=False).bundle_dir


def _tasks_text(tasks: list[Task]) -> str:
    """``N classes`` for a one-task model, else each task described."""
    if len(tasks) == 1:
        return f"{len(tasks[0].classes)} classes"
    return "tasks " + "; ".join(t.describe() for t in tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle folder (RUN/model)")
    parser.add_argument("--images", type=Path, default=None, help="labelled images (class dirs)")
    parser.add_argument("--n", type=int, default=256, help="images timed per runtime")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is reported")
    args = parser.parse_args()

    import torch

    from headstart.bundle import read_bundle
    from headstart.export import export_model
    from headstart.export.images import accuracy, check_images, default_check_dir
    from headstart.export.torch_model import build_torch_model
    from headstart.features.onnx_engine import physical_cores
    from headstart.model import split_columns

    threads = physical_cores()
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("HEADSTART_CACHE", str(Path(tmp) / "cache"))
        bundle = args.model or _quick_model(Path(tmp))
        images = args.images or default_check_dir()
        t0 = time.perf_counter()
        result = export_model(
            bundle, output=Path(tmp) / "model.onnx", quantize="int8", check_images=images
        )
        print(f"export + parity check + int8: {time.perf_counter() - t0:.1f} s", flush=True)
        assert result.int8 is not None
        contents = read_bundle(bundle)
        task = contents.tasks[0]  # accuracy: the first task's, as the export check reports it
        checks = check_images(images, contents.backbone.preprocessing)
        labels = checks.labels_for(task.classes)
        n_labelled = sum(label is not None for label in labels)
        reps = -(-args.n // len(checks.batch))
        timed = np.concatenate([checks.batch] * reps)[: args.n]
        module = build_torch_model(contents)

        def eager(batch: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(batch)).double().numpy()

        runners: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [
            (f"torch eager (backbone + head, batch {args.batch_size})", eager),
            ("onnxruntime fp32 whole model", _onnx_runner(result.path, threads)),
            ("onnxruntime int8 (MatMul/Gemm)", _onnx_runner(result.int8.path, threads)),
        ]
        rows = []
        reference = _proba(eager, checks.batch, args.batch_size)
        rates = _best_rates(runners, timed, args.batch_size, args.repeat)
        for (name, run), rate in zip(runners, rates, strict=True):
            proba = _proba(run, checks.batch, args.batch_size)
            first = split_columns(contents.tasks, proba)[task.name]
            acc = math.nan if task.multi_label else accuracy(first, labels, task.classes)
            rows.append((name, rate, acc, float(np.abs(proba - reference).max())))

    print(
        f"\n{platform.processor() or platform.machine()}, {threads} threads, "
        f"{len(timed)} images (best of {args.repeat}), {_tasks_text(contents.tasks)}, backbone "
        f"{contents.backbone.name}, accuracy on {n_labelled} labelled images"
    )
    print(f"{'runtime':<44} {'img/s':>8} {'x eager':>8} {'accuracy':>9} {'max|dp|':>9}")
    base = rows[0][1]
    for name, rate, acc, diff in rows:
        print(f"{name:<44} {rate:8.1f} {rate / base:8.2f} {acc:9.3f} {diff:9.1e}")
    q = result.int8
    agreement = "n/a" if q.top1_agreement is None else f"{q.top1_agreement:.1%}"
    print(
        f"\nparity (export check, {result.n_check_images} images): onnxruntime vs torch "
        f"{result.max_abs_diff:.1e}; int8 top-1 agreement with fp32 {agreement}, "
        f"accuracy {q.accuracy_fp32:.3f} -> {q.accuracy_int8:.3f}"
    )


if __name__ == "__main__":
    main()
