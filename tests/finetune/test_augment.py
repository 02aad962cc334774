"""Augmentation presets: resolution of overrides, shapes, eval transform = bundle preprocessing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.backbones import Preprocessing
from headstart.config import AugmentConfig
from headstart.errors import ConfigError
from headstart.finetune.augment import PRESETS, eval_transform, resolve, train_transform
from headstart.finetune.data import DecodedImages
from headstart.finetune.targets import batch_mixer

PREP = Preprocessing(40, 32, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear")


def test_presets_and_per_transform_overrides() -> None:
    """A preset gives its transforms; a field set in the config replaces only that one."""
    assert resolve(AugmentConfig(preset="none")) == PRESETS["none"]
    strong = resolve(AugmentConfig(preset="strong"))
    assert strong.policy == "trivialaugment" and strong.mixup_alpha > 0 and strong.cutmix_alpha > 0
    tuned = resolve(AugmentConfig(preset="strong", policy="randaugment", cutmix_alpha=0.0))
    assert tuned.policy == "randaugment" and tuned.cutmix_alpha == 0 and tuned.hflip
    light = resolve(AugmentConfig(preset="light", crop_scale=(0.5, 0.9), hflip=False))
    assert light.crop_scale == (0.5, 0.9) and not light.hflip and light.random_crop


def test_bad_crop_scale_names_the_value() -> None:
    with pytest.raises(ConfigError, match=r"crop_scale.*\(0\.0, 0\.5\)"):
        resolve(AugmentConfig(crop_scale=(0.0, 0.5)))


@pytest.mark.parametrize("preset", ["none", "light", "strong"])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_train_transform_gives_normalised_crop(preset: str, interpolation: str) -> None:
    """Every preset runs with the backbone's interpolation (timm models use bicubic)."""
    prep = Preprocessing(40, 32, PREP.mean, PREP.std, interpolation)
    image = torch.randint(0, 256, (3, 40, 53), dtype=torch.uint8)
    torch.manual_seed(0)
    for policy in ("trivialaugment", "randaugment", None):
        transform = train_transform(resolve(AugmentConfig(preset=preset, policy=policy)), prep)
        for _ in range(30):  # a policy picks random ops (rotations, shears among them)
            out = transform(image)
            assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    assert float(out.min()) < 0 < float(out.max())  # normalised, not [0, 1]


def test_eval_transform_matches_bundle_preprocessing(tmp_path: Path) -> None:
    """What validation sees during fine-tuning is what ``load(...).predict`` will see."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (70, 95, 3), dtype=np.uint8))
    path = f"{tmp_path}/x.png"
    image.save(path)
    decoded = DecodedImages([Path(path)], PREP, budget_mb=10)[0]
    ours = eval_transform(PREP)(decoded).numpy()
    np.testing.assert_allclose(ours, PREP(image), atol=1e-5)


def test_mixer_gives_soft_labels_or_none() -> None:
    assert batch_mixer(resolve(AugmentConfig(preset="light"))) is None
    mix = batch_mixer(resolve(AugmentConfig(preset="strong")))
    assert mix is not None
    images, labels = mix(torch.rand(4, 3, 32, 32), torch.eye(3)[torch.tensor([0, 1, 2, 0])])
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4, 3)
    torch.testing.assert_close(labels.sum(1), torch.ones(4))
