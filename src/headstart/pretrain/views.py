"""The augmented views of self-supervised pretraining (lightly's view transforms), seeded per
(image, view) so a view is the same image whenever it is made: in a resumed run, on another
rank, or when its kept activations were dropped for memory.

Each image has ``views`` fixed views; every epoch pairs one even-numbered view with one
odd-numbered one (BYOL's two view recipes alternate the same way).  A pair is drawn from the
per-sample seed of :class:`headstart.finetune.data.EpochSampler`, which depends only on (seed,
epoch), so a resumed run draws the pairs the uninterrupted one drew.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.functional import to_pil_image

from headstart.backbones import Preprocessing
from headstart.errors import ConfigError
from headstart.pretrain.options import METHODS, require_lightly

__all__ = ["PairDataset", "make_view", "pair_of", "view_transforms"]

ViewTransform = Callable[..., Tensor]


def _lightly_transforms() -> Any:
    require_lightly()
    # lazy: an optional dependency, only `headstart pretrain` needs it
    import lightly.transforms

    return lightly.transforms


def view_transforms(method: str, size: int, prep: Preprocessing) -> list[ViewTransform]:
    """The view recipes of ``method`` at ``size`` pixels, normalised like ``prep``: view ``v``
    uses recipe ``v % len(recipes)``.  SimCLR: one recipe; BYOL: its two (the second with
    less blur, some solarisation); DINO: its two global-crop recipes (no local crops: on a
    CPU the extra small views cost more than they add over a few epochs)."""
    if method not in METHODS:
        raise ConfigError(f"unknown pretraining method {method!r}; known: {', '.join(METHODS)}")
    lt = _lightly_transforms()
    normalize = {"mean": list(prep.mean), "std": list(prep.std)}
    if method == "simclr":
        return [lt.SimCLRViewTransform(input_size=size, normalize=normalize)]
    if method == "byol":
        return [
            lt.BYOLView1Transform(input_size=size, normalize=normalize),
            lt.BYOLView2Transform(input_size=size, normalize=normalize),
        ]
    view = lt.DINOViewTransform
    return [
        view(crop_size=size, gaussian_blur=1.0, solarization_prob=0.0, normalize=normalize),
        view(crop_size=size, gaussian_blur=0.1, solarization_prob=0.2, normalize=normalize),
    ]


def view_seed(seed: int, image: int, view: int) -> int:
    """The seed of one view: a function of the run's seed, the image and the view only."""
    return int(np.random.SeedSequence([seed, image, view]).generate_state(1)[0])


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Every generator a lightly transform draws from (torch, numpy's and Python's global
    ones) seeded, and put back afterwards."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def make_view(transforms: list[ViewTransform], image: Tensor, seed: int, view: int) -> Tensor:
    """View ``view`` of a uint8 (3, H, W) image: its recipe, drawn from ``seed``."""
    with _seeded(seed):
        out: Tensor = transforms[view % len(transforms)](to_pil_image(image))
    return out


def pair_of(sample_seed: int, views: int) -> tuple[int, int]:
    """(even view, odd view) of ``views`` for one sample of one epoch."""
    half = views // 2
    return 2 * (sample_seed % half), 2 * ((sample_seed >> 24) % half) + 1


class PairDataset(Dataset[Tensor]):
    """Items ``(image, view a, view b)`` (a long tensor) for the keys of
    :class:`~headstart.finetune.data.EpochSampler`: the views are made where the trunk runs."""

    def __init__(self, n: int, views: int) -> None:
        if views < 2 or views % 2:
            raise ConfigError(f"views={views}: give an even number of views per image, >= 2")
        self.n, self.views = n, views

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: int | tuple[int, int]) -> Tensor:
        index, sample_seed = key if isinstance(key, tuple) else (key, key)
        a, b = pair_of(sample_seed, self.views)
        return torch.tensor([index, a, b], dtype=torch.long)
