"""Explanation speed: the cached differentiable model vs building it for every image.

    python benchmarks/explain.py [--images N] [--threads T]

Fits a logistic head on mobilenet_v2 features of three demo classes (hat, pants, shoes), writes a
bundle, then times on N demo test photos:

(a) rebuild: ``explain(load(bundle), photo)`` per photo: what a script that loads the model for
    each image pays (backbone build + head conversion every time).
(b) explain: one loaded model, ``explain(model, photo)`` per photo (network built once).
(c) explain_many: one loaded model, batches of 8.
(d) forward only: ``model.predict_images`` (no CAM), for scale.
Each CAM row is run for gradcam, gradcam++ and eigencam.  Prints a table (images, seconds,
img/s, speed-up vs rebuild).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

CLASSES = ["hat", "pants", "shoes"]


def _bundle(folder: Path) -> Path:
    import torch

    from headstart.backbones import resolve_backbone
    from headstart.bundle import write_bundle
    from headstart.data import Task, load_rgb
    from headstart.demo import demo_data_dir
    from headstart.heads import create_head

    ref = resolve_backbone("mobilenet_v2")
    backbone = ref.build()
    paths = [p for c in CLASSES for p in sorted((demo_data_dir() / "train" / c).glob("*"))[:8]]
    batch = np.stack([ref.preprocessing(load_rgb(p)) for p in paths])
    with torch.inference_mode():
        features = backbone(torch.from_numpy(batch)).numpy()
    head = create_head("logistic").fit(features, [p.parent.name for p in paths])
    task = Task("label", tuple(CLASSES))
    return write_bundle(folder / "model", tasks=[task], heads={task.name: head}, backbone=ref)


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from headstart.data import load_rgb
    from headstart.demo import demo_data_dir
    from headstart.explain import explain, explain_many
    from headstart.model import load

    torch.set_num_threads(args.threads)
    test = [p for c in CLASSES for p in sorted((demo_data_dir() / "test" / c).glob("*"))]
    photos = (test * (args.images // len(test) + 1))[: args.images]
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        bundle = _bundle(Path(tmp))
        warm = load(bundle)
        explain(warm, photos[0])  # build once before timing (b) and (c)
        for method in ("gradcam", "gradcam++", "eigencam"):
            rows.append(
                (
                    f"{method}: rebuild per image",
                    _timed(lambda m=method: [explain(load(bundle), p, method=m) for p in photos]),
                )
            )
            rows.append(
                (
                    f"{method}: explain (cached)",
                    _timed(lambda m=method: [explain(warm, p, method=m) for p in photos]),
                )
            )
            rows.append(
                (
                    f"{method}: explain_many (cached)",
                    _timed(lambda m=method: explain_many(warm, photos, method=m)),
                )
            )
        images = [load_rgb(p) for p in photos]
        warm.predict_images(images[:1])
        rows.append(("forward only: predict_images", _timed(lambda: warm.predict_images(images))))

    print(f"{platform.processor() or platform.machine()}, torch threads {args.threads}")
    print(f"{'case':38} {'images':>6} {'seconds':>8} {'img/s':>7} {'vs rebuild':>10}")
    baseline = 0.0
    for name, seconds in rows:
        if "rebuild" in name:
            baseline = seconds
        ratio = f"{baseline / seconds:.1f}x" if "forward" not in name else ""
        rate = len(photos) / seconds
        print(f"{name:38} {len(photos):6d} {seconds:8.2f} {rate:7.1f} {ratio:>10}")


if __name__ == "__main__":
    main()
