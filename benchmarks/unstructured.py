"""Why unstructured magnitude pruning buys no speed on these CPUs, beside channel pruning.

    python benchmarks/unstructured.py [--n 128] [--batch-size 32] [--repeat 5] [--threads 2]

mobilenet_v2 (the packaged ImageNet weights) as headstart's feature extractor, five ways:
(a) dense, as shipped;
(b, c) unstructured: ``torch.nn.utils.prune.global_unstructured`` with L1 magnitude over every
    convolution's weights at 50% and 90% sparsity, made permanent (``prune.remove``), so the
    weights are plain dense tensors holding zeros;
(d, e) structured: :func:`headstart.finetune.prune.prune_backbone` removing 30% and 50% of the
    channels (what ``prune:RATIO`` does before its recovery fine-tune; none here).
Each is timed as a user times it, on the same preprocessed demo photos (repeated to ``--n``),
in one run, batch by batch interleaved, each batch's fastest of ``--repeat`` timings kept:
torch eager (``inference_mode``, channels-last, batch ``--batch-size``, ``--threads`` torch
threads) and ONNX Runtime (headstart's engine: ``export_onnx`` of the backbone, an
``OnnxFeatures`` session with ``--threads`` threads).  Sizes: the safetensors weights file,
the same bytes zlib-compressed (level 6), and the ONNX file.  ``cos`` is the mean cosine
similarity of each variant's pooled features to the dense model's on those photos (no recovery
fine-tune, so it shows the damage the pruning does before training).

The zeros of (b, c) are multiplied like any other number by the dense convolution kernels of
oneDNN and MLAS: the same FLOPs, the same img/s, the same file (only a compressor sees them).
Removing channels makes the tensors smaller, so the same kernels do less work.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from headstart.backbones.model import Backbone

Runner = Callable[[np.ndarray], np.ndarray]


def _unstructured(backbone: Backbone, amount: float) -> Backbone:
    """``amount`` of all convolution weights zeroed by global L1 magnitude, made permanent."""
    import torch
    from torch.nn.utils import prune

    convs = [(m, "weight") for m in backbone.model.modules() if isinstance(m, torch.nn.Conv2d)]
    prune.global_unstructured(convs, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in convs:
        prune.remove(module, name)  # the mask folded in: a plain tensor with zeros
    return backbone


def _eager(backbone: Backbone) -> Runner:
    import torch

    model = backbone.eval().to(memory_format=torch.channels_last)

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return model(x).numpy()

    return run


def _rates(runners: list[Runner], batch: np.ndarray, size: int, repeat: int) -> list[float]:
    """img/s of each runner: every chunk of ``batch`` timed ``repeat`` times per runner, the
    runners interleaved chunk by chunk, and each chunk's fastest time kept, so a burst of load
    from other processes costs a round of one chunk, not a runner's whole result."""
    chunks = [batch[j : j + size] for j in range(0, len(batch), size)]
    for run in runners:
        run(chunks[0])  # warm-up: first-call allocations and kernel selection
    best = np.full((len(runners), len(chunks)), np.inf)
    for _ in range(repeat):
        for j, chunk in enumerate(chunks):
            for i, run in enumerate(runners):
                start = time.perf_counter()
                run(chunk)
                best[i, j] = min(best[i, j], time.perf_counter() - start)
    return [len(batch) / float(t) for t in best.sum(axis=1)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((a * b).sum(axis=1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=128, help="images timed per variant")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5, help="timings of each chunk; the best")
    parser.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads")
    args = parser.parse_args()

    import torch

    from headstart.backbones import resolve_backbone
    from headstart.backbones.model import save_weights
    from headstart.export.images import check_images
    from headstart.features.onnx_engine import OnnxFeatures, export_onnx
    from headstart.finetune.prune import prune_backbone

    torch.set_num_threads(args.threads)
    ref = resolve_backbone("mobilenet_v2")
    photos = check_images(None, ref.preprocessing).batch
    timed = np.concatenate([photos] * -(-args.n // len(photos)))[: args.n]
    variants: list[tuple[str, Backbone]] = [("dense", ref.build())]
    for amount in (0.5, 0.9):
        variants.append((f"unstructured L1 {amount:.0%}", _unstructured(ref.build(), amount)))
    for ratio in (0.3, 0.5):
        backbone = ref.build()
        prune_backbone(backbone, ratio)
        variants.append((f"channels {ratio:.0%} (no recovery)", backbone))

    rows = []
    runners: list[Runner] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, backbone) in enumerate(variants):
            weights = Path(tmp) / f"{i}.safetensors"
            save_weights(backbone, weights)
            raw = weights.read_bytes()
            onnx = export_onnx(backbone, Path(tmp) / f"{i}.onnx")
            convs = [m.weight for m in backbone.model.modules() if isinstance(m, torch.nn.Conv2d)]
            zeros = sum(int((w == 0).sum()) for w in convs) / sum(w.numel() for w in convs)
            sizes = (len(raw), len(zlib.compress(raw, 6)), onnx.stat().st_size)
            eager, session = _eager(backbone), OnnxFeatures(onnx, threads=args.threads)
            features = _eager(backbone)(photos)
            rows.append([name, zeros, *sizes, features])
            runners += [eager, session]
        rates = _rates(runners, timed, args.batch_size, args.repeat)

    print(
        f"\nmobilenet_v2 features, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__} CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{args.threads} threads, {len(timed)} images, batch {args.batch_size}, each batch's "
        f"best of {args.repeat}"
    )
    head = f"{'variant':<30} {'zeros':>6} {'file MB':>8} {'zlib MB':>8} {'onnx MB':>8}"
    print(f"{head} {'eager/s':>8} {'x':>5} {'ort/s':>8} {'x':>5} {'cos':>6}")
    dense = rows[0][5]
    for k, (name, zeros, raw, packed, onnx_size, features) in enumerate(rows):
        eager_rate, ort_rate = rates[2 * k], rates[2 * k + 1]
        print(
            f"{name:<30} {zeros:6.1%} {raw / 1e6:8.2f} {packed / 1e6:8.2f} {onnx_size / 1e6:8.2f} "
            f"{eager_rate:8.1f} {eager_rate / rates[0]:5.2f} {ort_rate:8.1f} "
            f"{ort_rate / rates[1]:5.2f} {_cosine(features, dense):6.3f}"
        )


if __name__ == "__main__":
    main()
