"""What makes self-supervised pretraining affordable on a CPU: images per second of one SimCLR
training step (two views per image, forward + backward + AdamW) of mobilenet_v2 on
clothing_small's training images, read as unlabelled.

    python benchmarks/pretrain.py [--data-root ../shared/data] [--batch 32] [--steps 3]

Rows: the whole network trained at 224, 160 and 128 px; the last N blocks trained with the
frozen trunk run under no_grad on every step; the last N blocks from trunk activations kept
per view (:class:`headstart.pretrain.trunk.ViewBank`: each view's trunk runs once, then every
epoch reuses it); and the cost of making one augmented view (lightly's SimCLR recipe).
The table also gives the trunk's share of a kept-view step's cost, paid once per view.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from headstart.backbones import Backbone, resolve_backbone
from headstart.finetune.data import DecodedImages
from headstart.pretrain.run import image_paths
from headstart.pretrain.training import decode
from headstart.pretrain.trunk import SplitBackbone
from headstart.pretrain.views import make_view, view_seed, view_transforms


def _views(images: DecodedImages, size: int, n: int, prep: object) -> tuple[torch.Tensor, float]:
    transforms = view_transforms("simclr", size, prep)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    out = torch.stack([make_view(transforms, images[i], view_seed(0, i, 0), 0) for i in range(n)])
    return out, (time.perf_counter() - t0) / n


def _step_rate(split: SplitBackbone | Backbone, x: torch.Tensor, mode: str, steps: int) -> float:
    from lightly.loss import NTXentLoss
    from lightly.models.modules import SimCLRProjectionHead

    head = SimCLRProjectionHead(int(split.feature_dim), 512, 128)
    params = [p for p in [*split.parameters(), *head.parameters()] if p.requires_grad]
    optim, loss_fn = torch.optim.AdamW(params, lr=1e-4), NTXentLoss(temperature=0.2)
    kept = split.trunk(x) if isinstance(split, SplitBackbone) and mode == "kept" else None
    split.train()
    rates = []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        if not isinstance(split, SplitBackbone):
            z = head(split(x))
        else:
            acts = kept if kept is not None else split.trunk(x)
            z = head(split.tail(acts))
        half = len(x) // 2
        loss = loss_fn(z[:half], z[half:])
        optim.zero_grad()
        loss.backward()
        optim.step()
        if step:  # the first step warms the allocator up
            rates.append(len(x) / 2 / (time.perf_counter() - t0))
    return sorted(rates)[len(rates) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--blocks", type=int, nargs="+", default=[3, 5])
    args = parser.parse_args()
    torch.manual_seed(0)
    ref = resolve_backbone("mobilenet_v2")
    paths = image_paths(args.data_root / "clothing_small" / "train")[: args.batch]
    rows: list[tuple[str, float, str]] = []
    for size in (224, 160, 128):
        images = decode(paths, ref, size, 512)
        x, view_s = _views(images, size, args.batch, ref.preprocessing)
        rows.append((f"make one view, {size} px", 1 / view_s, "views/s"))
        whole = ref.build()
        rows.append((f"whole network, {size} px", _step_rate(whole, x, "whole", args.steps), ""))
        if size == 224:
            continue
        for n in args.blocks:
            for mode in ("recompute", "kept"):
                split = SplitBackbone(ref.build(), n)
                label = "trunk run every step" if mode == "recompute" else "trunk kept per view"
                rate = _step_rate(split, x, mode, args.steps)
                rows.append((f"last {n} blocks, {label}, {size} px", rate, ""))
    print(f"| setting (batch {args.batch}, SimCLR step) | images/s |")
    print("|---|---:|")
    for name, rate, unit in rows:
        print(f"| {name} | {rate:.1f} {unit} |")


if __name__ == "__main__":
    main()
