"""Images for fine-tuning: decoded once, resized like the backbone's preprocessing, kept in memory
(up to a budget), served by epoch-seeded samplers so a resumed run sees the same batches.
Targets are the concatenated per-task rows of :mod:`headstart.finetune.targets`.  Texts
(:mod:`headstart.finetune.text`) share the sampler, in length buckets, and the data module.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from headstart.backbones import Preprocessing
from headstart.backbones.preprocessing import INTERPOLATIONS
from headstart.data import load_rgb
from headstart.errors import ImageError
from headstart.finetune.augment import eval_transform

__all__ = [
    "BUCKET_POOL",
    "DecodedImages",
    "EpochSampler",
    "FinetuneData",
    "ImageDataset",
    "Imbalance",
    "Inputs",
    "decide_imbalance",
]

#: Length-bucketed batches are formed within pools of this many batches of the shuffled order
#: (as Hugging Face's ``group_by_length``): batches of alike-long texts, still drawn at random.
BUCKET_POOL = 50


class Inputs(Protocol):
    """What evaluation reads a trained network's inputs from: decoded images or tokenized
    texts, row for row with the manifest."""

    def __len__(self) -> int: ...

    def eval_order(self, rows: Sequence[int]) -> list[int]:
        """The order to evaluate ``rows`` in (results are put back in the given order)."""
        ...

    def eval_batch(self, rows: Sequence[int]) -> Tensor:
        """The network's input for ``rows``."""
        ...


class DecodedImages:
    """uint8 (3, H, W) tensors of images resized (shorter side) like ``prep``; cached in memory
    while the total stays under ``budget_mb``, decoded again on each access past it."""

    def __init__(self, paths: Sequence[Path], prep: Preprocessing, budget_mb: int) -> None:
        self.paths = list(paths)
        self.prep = prep
        self._budget = budget_mb * 1024 * 1024
        self._used = 0
        self._cache: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, index: int) -> Tensor:
        image = load_rgb(self.paths[index], draft_size=self.prep.resize)
        size = self.prep.resized_size(*image.size)
        if size != image.size:
            image = image.resize(size, INTERPOLATIONS[self.prep.interpolation])
        return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)

    def __getitem__(self, index: int) -> Tensor:
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        tensor = self._decode(index)
        if self._used + tensor.numel() <= self._budget:
            self._cache[index] = tensor
            self._used += tensor.numel()
        return tensor

    def extended(self, paths: Sequence[Path]) -> DecodedImages:
        """These images followed by ``paths`` (indices ``len(self)`` on), sharing what is
        decoded already and the memory budget."""
        out = DecodedImages([*self.paths, *paths], self.prep, 0)
        out._budget, out._used, out._cache = self._budget, self._used, dict(self._cache)
        return out

    def eval_order(self, rows: Sequence[int]) -> list[int]:
        """``rows`` as they are (images all have one size)."""
        return list(rows)

    def eval_batch(self, rows: Sequence[int]) -> Tensor:
        """The evaluation transform of ``rows``' images, stacked."""
        transform = eval_transform(self.prep)
        return torch.stack([transform(self[i]) for i in rows])

    def check_all(self) -> dict[int, str]:
        """Decode every image once (filling the cache); {index: reason} for unreadable ones."""
        failures: dict[int, str] = {}
        for i in range(len(self.paths)):
            try:
                self[i]
            except ImageError as exc:
                failures[i] = str(exc)
        return failures


class ImageDataset(Dataset[tuple[Tensor, ...]]):
    """(transformed image, target row) pairs over some rows of a :class:`DecodedImages`;
    with ``soft`` (distillation: the teacher's row of each sample, see
    :mod:`headstart.finetune.soft`), (image, target row, soft row) triples."""

    def __init__(
        self,
        images: DecodedImages,
        rows: Sequence[int],
        targets: Sequence[Tensor],
        transform: Callable[[Tensor], Tensor],
        soft: Sequence[Tensor] | None = None,
    ) -> None:
        self.images = images
        self.rows = list(rows)
        self.targets = list(targets)
        self.transform = transform
        self.soft = None if soft is None else list(soft)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[Tensor, ...]:
        """``key`` is an index, or (index, seed) from :class:`EpochSampler`: the random
        transforms then draw from that seed, whatever ran before (Lightning fetches a batch
        ahead, so the global generator's state at that moment depends on the run's history)."""
        if isinstance(key, tuple):
            index, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self._item(index)
        return self._item(key)

    def _item(self, index: int) -> tuple[Tensor, ...]:
        image = self.transform(self.images[self.rows[index]])
        if self.soft is None:
            return image, self.targets[index]
        return image, self.targets[index], self.soft[index]


class EpochSampler(Sampler[tuple[int, int]]):
    """A shuffle (or, given each sample's class index, a class-balanced draw with replacement)
    that depends only on (seed, epoch), yielding (index, augmentation seed) pairs.

    Lightning calls ``set_epoch`` each epoch, so a run resumed at epoch k draws exactly the
    batches, and the augmentations, that the uninterrupted run drew at epoch k.

    With ``lengths`` (texts: tokens per item), each pool of :data:`BUCKET_POOL` batches of
    the drawn order is sorted by length and cut into batches of ``batch_size``, whose order is
    then shuffled (a short last batch stays last, so the loader's batches are the buckets):
    dynamic padding then pads little."""

    def __init__(
        self,
        n: int,
        seed: int,
        balance_on: Sequence[int] | None = None,
        *,
        lengths: Sequence[int] | None = None,
        batch_size: int = 1,
    ) -> None:
        self.n = n
        self.seed = seed
        self.balance_on = None if balance_on is None else np.asarray(balance_on)
        self.lengths = None if lengths is None else np.asarray(lengths)
        self.batch_size = batch_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[tuple[int, int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        n = self.n
        if self.balance_on is not None:
            counts = np.bincount(self.balance_on)
            weights = 1.0 / counts[self.balance_on]
            order = rng.choice(n, size=n, replace=True, p=weights / weights.sum())
        else:
            order = rng.permutation(n)
        if self.lengths is not None:
            order = self._bucketed(order, rng)
        seeds = rng.integers(0, 2**62, size=n)
        return iter(zip(order.tolist(), seeds.tolist(), strict=True))

    def _bucketed(self, order: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.lengths is None or self.batch_size < 2 or len(order) <= self.batch_size:
            return order
        size, pool = self.batch_size, self.batch_size * BUCKET_POOL
        batches: list[np.ndarray] = []
        for start in range(0, len(order), pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
        short = [batches.pop()] if len(batches[-1]) < size else []
        shuffled = [batches[i] for i in rng.permutation(len(batches))]
        return np.concatenate(shuffled + short)


@dataclass(frozen=True)
class Imbalance:
    """Training-class counts, their max/min ratio and the remedy applied."""

    counts: dict[str, int]
    ratio: float
    remedy: str  # "none", "weighted_loss" or "sampler"
    reason: str


def decide_imbalance(
    labels: Sequence[str], classes: Sequence[str], mode: str, threshold: float
) -> Imbalance:
    """Pick the imbalance remedy. ``auto``: none up to ``threshold`` (max/min class count);
    a class-weighted loss up to 10x; beyond, a balanced sampler (weights over 10 make the loss
    noisy, oversampling with augmentation is steadier)."""
    counts = Counter(labels)
    per_class = {c: counts.get(c, 0) for c in classes}
    low = max(min(per_class.values()), 1)
    ratio = max(per_class.values()) / low
    if mode != "auto":
        return Imbalance(per_class, ratio, mode, f"set by train.imbalance={mode}")
    if ratio <= threshold:
        remedy, why = "none", f"class ratio {ratio:.1f} <= threshold {threshold:g}"
    elif ratio <= 10:
        remedy, why = "weighted_loss", f"class ratio {ratio:.1f} > {threshold:g}"
    else:
        remedy, why = "sampler", f"class ratio {ratio:.1f} > 10"
    return Imbalance(per_class, ratio, remedy, why)


class FinetuneData(LightningDataModule):
    """Train / val loaders over decoded images or tokenized texts (the val loader keeps
    manifest order).  Texts: ``collate`` pads each batch, ``lengths`` buckets the training
    batches by length (see :class:`EpochSampler`)."""

    def __init__(
        self,
        train: Dataset[tuple[Tensor, ...]],
        val: Dataset[tuple[Tensor, ...]],
        *,
        batch_size: int,
        seed: int,
        balance_on: Sequence[int] | None,
        workers: int,
        collate: Callable[[Sequence[tuple[Tensor, ...]]], tuple[Tensor, ...]] | None = None,
        lengths: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.train_set = train
        self.val_set = val
        self.batch_size = batch_size
        self.seed = seed
        self.balance_on = balance_on
        self.workers = workers
        self.collate = collate
        self.lengths = lengths

    def train_dataloader(self) -> DataLoader[tuple[Tensor, ...]]:
        sampler = EpochSampler(
            len(self.train_set),  # type: ignore[arg-type]
            self.seed,
            self.balance_on,
            lengths=self.lengths,
            batch_size=self.batch_size,
        )
        # drop_last only when it drops a little: a last batch of 1 breaks BatchNorm in training
        drop = len(self.train_set) % self.batch_size == 1  # type: ignore[arg-type]
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.workers,
            drop_last=drop,
            persistent_workers=self.workers > 0,
            collate_fn=self.collate,
        )

    def val_dataloader(self) -> DataLoader[tuple[Tensor, ...]]:
        return DataLoader(
            self.val_set,
            batch_size=self.batch_size * 2,
            num_workers=self.workers,
            collate_fn=self.collate,
        )


def pil_to_uint8(image: Image.Image) -> Tensor:
    """An RGB PIL image as a uint8 (3, H, W) tensor."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(
        2, 0, 1
    )
