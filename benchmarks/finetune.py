"""headstart's fine-tune vs the PyTorch transfer-learning tutorial's loop, in one run.

Same backbone (MobileNetV2, the built-in ImageNet weights), same epochs, same data (a folder
with ``train/`` and ``val/``, e.g. hymenoptera).  The baseline is the tutorial's
``train_model`` ("Transfer Learning for Computer Vision Tutorial", finetuning the convnet):
ImageFolder, RandomResizedCrop(224) + flip, batch 4, 4 workers, SGD(lr=1e-3, momentum=0.9),
StepLR(7, 0.1), the whole network trained from the first epoch, best validation weights kept.

Throughput is training images per second of training wall time (training and validation
passes included, as both loops run them every epoch).

    .venv/bin/python benchmarks/finetune.py /work/shared/data/hymenoptera --epochs 3
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision import datasets, transforms

from headstart.backbones import resolve_backbone
from headstart.config import load_config
from headstart.pipeline import fit
from headstart.stats import Metrics


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} {five:.1f} {fifteen:.1f}"


def tutorial(data: Path, epochs: int, workers: int) -> tuple[float, float, int]:
    """The tutorial's loop; returns (best val accuracy, seconds, training images seen)."""
    norm = transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    tf = {
        "train": transforms.Compose(
            [
                transforms.RandomResizedCrop(224),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                norm,
            ]
        ),
        "val": transforms.Compose(
            [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm]
        ),
    }
    sets = {x: datasets.ImageFolder(str(data / x), tf[x]) for x in ("train", "val")}
    loaders = {
        x: torch.utils.data.DataLoader(sets[x], batch_size=4, shuffle=True, num_workers=workers)
        for x in ("train", "val")
    }
    model: Any = resolve_backbone("mobilenet_v2").build().model  # torchvision's MobileNetV2
    model.classifier[1] = nn.Linear(1280, len(sets["train"].classes))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    best_acc, best = 0.0, copy.deepcopy(model.state_dict())
    start = time.perf_counter()
    for _ in range(epochs):
        for phase in ("train", "val"):
            model.train(phase == "train")
            correct = 0
            for inputs, labels in loaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                correct += int((outputs.argmax(1) == labels).sum())
            if phase == "train":
                scheduler.step()
            acc = correct / len(sets[phase])
            if phase == "val" and acc > best_acc:
                best_acc, best = acc, copy.deepcopy(model.state_dict())
    seconds = time.perf_counter() - start
    model.load_state_dict(best)
    return best_acc, seconds, epochs * len(sets["train"])


def headstart_finetune(data: Path, epochs: int) -> tuple[float, float, int, int]:
    """headstart's recipe with defaults; returns (val accuracy, seconds, images, epochs run)."""
    cfg = load_config(overrides=[f"train.epochs={epochs}", "eval.n_boot=0"])
    with tempfile.TemporaryDirectory() as tmp:
        result = fit(data, Path(tmp) / "run", config=cfg, strategy="finetune", progress=False,
                     report=False)  # fmt: skip
        history = (result.run_dir / "logs" / "metrics.csv").read_text().splitlines()
    runs = len(history) - 1
    n_train = len(result.manifest.split("train"))
    val = result.metrics["val"][result.tasks[0].name]  # class folders: one multi-class task
    if not isinstance(val, Metrics):
        raise SystemExit(f"{data}: expected class folders (one multi-class task)")
    return val.accuracy.value, result.timings["train"], runs * n_train, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help="folder with train/ and val/ class folders")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=4, help="tutorial's DataLoader workers")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{torch.get_num_threads()} threads, load before: {load()}")  # fmt: skip
    acc_h, sec_h, img_h, runs = headstart_finetune(args.data, args.epochs)
    mid = load()
    acc_t, sec_t, img_t = tutorial(args.data, args.epochs, args.workers)
    rate_h, rate_t = img_h / sec_h, img_t / sec_t
    print(f"\n{'loop':<28}{'epochs':>7}{'seconds':>10}{'img/s':>8}{'val acc':>9}  load (1/5/15)")
    print(f"{'headstart finetune':<28}{runs:>7}{sec_h:>10.1f}{rate_h:>8.2f}{acc_h:>9.3f}  {mid}")
    print(f"{'PyTorch tutorial loop':<28}{args.epochs:>7}{sec_t:>10.1f}{rate_t:>8.2f}"
          f"{acc_t:>9.3f}  {load()}")  # fmt: skip
    print(f"\nthroughput ratio headstart / tutorial: {rate_h / rate_t:.2f}x")


if __name__ == "__main__":
    main()
