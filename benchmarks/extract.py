"""Feature extraction speed: headstart vs the pipeline a user writes by hand.

    python benchmarks/extract.py [--data /work/shared/data/clothing_small/train] [--limit N]

(a) plain: torchvision ImageFolder + MobileNet_V2_Weights.IMAGENET1K_V1.transforms() +
    torchvision mobilenet_v2 with the packaged weights, eval, torch.no_grad, batch 64,
    DataLoader with 2 workers; features = pooled, pre-classifier.
(b) headstart extract with a fresh temporary store (cold: hashing, ONNX export, decode, infer).
(c) headstart extract again on the same store (warm: every entry cached).
Prints a table (images, seconds, img/s, ratio vs plain) and the max abs difference between the
plain features and headstart's.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "clothing_small" / "train"


def plain_pipeline(root: Path, limit: int | None) -> tuple[list[Path], np.ndarray, float]:
    """The hand-written torchvision pipeline; returns (paths, features, seconds)."""
    import torch
    import torchvision
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import ImageFolder
    from torchvision.models import MobileNet_V2_Weights

    from headstart.backbones import resolve_backbone

    start = time.perf_counter()
    dataset = ImageFolder(str(root), transform=MobileNet_V2_Weights.IMAGENET1K_V1.transforms())
    indices = list(range(len(dataset) if limit is None else min(limit, len(dataset))))
    model = torchvision.models.mobilenet_v2()
    weights = resolve_backbone("mobilenet_v2").weights_path
    if weights is None:
        raise SystemExit("mobilenet_v2 has no packaged weights file here")
    model.load_state_dict(torch.load(weights, weights_only=True))
    model.eval()
    loader = DataLoader(Subset(dataset, indices), batch_size=64, num_workers=2)
    chunks = []
    with torch.no_grad():
        for x, _ in loader:
            pooled = torch.nn.functional.adaptive_avg_pool2d(model.features(x), 1).flatten(1)
            chunks.append(pooled.numpy())
    seconds = time.perf_counter() - start
    paths = [Path(dataset.samples[i][0]) for i in indices]
    return paths, np.concatenate(chunks), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--skip-plain", action="store_true", help="headstart rows only")
    args = parser.parse_args()

    from headstart.backbones import resolve_backbone
    from headstart.cache import CacheRoot
    from headstart.features import extract

    rows: list[tuple[str, int, float]] = []
    paths: list[Path]
    plain: np.ndarray | None = None
    if args.skip_plain:
        exts = {".jpg", ".jpeg", ".png"}
        paths = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in exts)
        paths = paths[: args.limit] if args.limit else paths
    else:
        paths, plain, seconds = plain_pipeline(args.data, args.limit)
        rows.append(("plain torchvision (2 workers, batch 64)", len(paths), seconds))
    ref = resolve_backbone("mobilenet_v2")
    options = {"engine": args.engine, "batch_size": args.batch_size, "workers": args.workers}
    with tempfile.TemporaryDirectory() as tmp:
        store = CacheRoot.of(tmp).store  # fresh: the cold row pays for everything
        cold = extract(paths, None, ref, store=store, progress=False, **options)
        rows.append((f"headstart cold ({cold.engine}, incl. export)", len(paths), cold.seconds))
        warm = extract(paths, None, ref, store=store, progress=False, **options)
        rows.append((f"headstart warm (n_cached={warm.n_cached})", len(paths), warm.seconds))

    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, data {args.data}"
    )
    base = rows[0][2] / rows[0][1]
    print(f"{'pipeline':44} {'images':>7} {'seconds':>8} {'img/s':>8} {'vs first':>9}")
    for name, n, seconds in rows:
        ratio = base / (seconds / n)
        print(f"{name:44} {n:7d} {seconds:8.1f} {n / seconds:8.1f} {ratio:8.1f}x")
    print(f"failures: {len(cold.failures)}")
    if plain is not None:
        ok = ~np.isnan(cold.features).any(axis=1)
        diff = np.abs(plain[ok] - cold.features[ok])
        scale = np.abs(plain).max()
        print(f"max abs diff plain vs headstart: {diff.max():.2e} (max |feature| {scale:.2f})")


if __name__ == "__main__":
    main()
