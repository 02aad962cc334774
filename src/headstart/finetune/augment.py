"""Training-time augmentation presets built from torchvision transforms v2.

Presets (each transform can be overridden in :class:`~headstart.config.AugmentConfig`):

=========  ==========================  =====  ===================  ==========================
preset     RandomResizedCrop scale     flip   policy               batch mixing
=========  ==========================  =====  ===================  ==========================
none       (center crop, as predict)   no     none                 none
light      (0.35, 1)                   yes    none                 none
strong     (0.08, 1)                   yes    TrivialAugmentWide   MixUp 0.2 / CutMix 1.0
=========  ==========================  =====  ===================  ==========================

Image transforms take a uint8 (3, H, W) tensor (the decoded image resized like the backbone's
preprocessing) and return the normalised float32 (3, crop, crop) input. MixUp/CutMix act on
batches of images and target rows (:func:`headstart.finetune.targets.batch_mixer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torchvision.transforms import InterpolationMode, v2

from headstart.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

    from headstart.backbones import Preprocessing
    from headstart.config import AugmentConfig

__all__ = ["PRESETS", "AugmentPlan", "eval_transform", "resolve", "train_transform"]


@dataclass(frozen=True)
class AugmentPlan:
    """The resolved transforms of a preset plus its overrides."""

    random_crop: bool
    crop_scale: tuple[float, float]
    hflip: bool
    policy: str
    mixup_alpha: float
    cutmix_alpha: float


PRESETS: dict[str, AugmentPlan] = {
    "none": AugmentPlan(False, (1.0, 1.0), False, "none", 0.0, 0.0),
    "light": AugmentPlan(True, (0.35, 1.0), True, "none", 0.0, 0.0),
    "strong": AugmentPlan(True, (0.08, 1.0), True, "trivialaugment", 0.2, 1.0),
}


def resolve(config: AugmentConfig) -> AugmentPlan:
    """The preset of ``config`` with its non-``None`` fields applied on top."""
    base = PRESETS[config.preset]
    scale = config.crop_scale if config.crop_scale is not None else base.crop_scale
    low, high = scale
    if not 0.0 < low <= high <= 1.0:
        raise ConfigError(f"augment.crop_scale must satisfy 0 < low <= high <= 1; got {scale}")
    return AugmentPlan(
        random_crop=base.random_crop or config.crop_scale is not None,
        crop_scale=(float(low), float(high)),
        hflip=base.hflip if config.hflip is None else config.hflip,
        policy=base.policy if config.policy is None else config.policy,
        mixup_alpha=base.mixup_alpha if config.mixup_alpha is None else config.mixup_alpha,
        cutmix_alpha=base.cutmix_alpha if config.cutmix_alpha is None else config.cutmix_alpha,
    )


def _normalise(prep: Preprocessing) -> list[Callable[..., object]]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(prep.mean), list(prep.std))]


def train_transform(plan: AugmentPlan, prep: Preprocessing) -> Callable[[Tensor], Tensor]:
    """uint8 (3, H, W) → normalised float (3, crop, crop) with the plan's random transforms."""
    interpolation = InterpolationMode(prep.interpolation)
    steps: list[Callable[..., object]] = []
    if plan.random_crop:
        steps.append(
            v2.RandomResizedCrop(
                prep.crop, scale=plan.crop_scale, interpolation=interpolation, antialias=True
            )
        )
    else:
        steps.append(v2.CenterCrop(prep.crop))
    if plan.hflip:
        steps.append(v2.RandomHorizontalFlip())
    # The policies keep their default (nearest) interpolation: their rotations and shears
    # support only nearest and bilinear on tensors, and timm's bicubic models would fail.
    if plan.policy == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    elif plan.policy == "randaugment":
        steps.append(v2.RandAugment())
    composed = v2.Compose([*steps, *_normalise(prep)])

    def apply(image: Tensor) -> Tensor:
        out: Tensor = composed(image)
        return out

    return apply


def eval_transform(prep: Preprocessing) -> Callable[[Tensor], Tensor]:
    """uint8 (3, H, W) already resized like ``prep`` → the center-cropped, normalised input
    (the same numbers as ``prep`` on the original image, up to float rounding)."""
    composed = v2.Compose([v2.CenterCrop(prep.crop), *_normalise(prep)])

    def apply(image: Tensor) -> Tensor:
        out: Tensor = composed(image)
        return out

    return apply
