"""How an image becomes the input tensor a backbone was trained on (PIL + numpy only).

No torch import here: this runs in decode workers and on cache hits, which must stay cheap.
The arithmetic follows torchvision's ``Resize(int)`` + ``CenterCrop`` + ``Normalize`` on PIL
images, so features match a hand-written torchvision pipeline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from headstart.errors import ConfigError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "Preprocessing"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def _triple(value: Any, name: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in value)
    if len(values) != 3:
        raise ConfigError(f"preprocessing {name} needs 3 values (R, G, B), got {list(values)}")
    return values[0], values[1], values[2]


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side to ``resize``, center-crop ``crop`` x ``crop``, scale to [0, 1],
    subtract ``mean`` and divide by ``std`` (per RGB channel)."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", _triple(self.mean, "mean"))
        object.__setattr__(self, "std", _triple(self.std, "std"))
        if self.interpolation not in INTERPOLATIONS:
            known = ", ".join(INTERPOLATIONS)
            raise ConfigError(f"unknown interpolation '{self.interpolation}'; known: {known}")
        if not 0 < self.crop <= self.resize:
            raise ConfigError(
                f"preprocessing needs 0 < crop <= resize, got crop={self.crop} resize={self.resize}"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"preprocessing std must be positive, got {list(self.std)}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reads it back."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys raise ``ConfigError``."""
        expected = {"resize", "crop", "mean", "std", "interpolation"}
        extra = set(d) - expected
        missing = expected - {"interpolation"} - set(d)
        if extra or missing:
            raise ConfigError(
                f"bad preprocessing dict: missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        return cls(
            resize=int(d["resize"]),
            crop=int(d["crop"]),
            mean=_triple(d["mean"], "mean"),
            std=_triple(d["std"], "std"),
            interpolation=str(d.get("interpolation", "bilinear")),
        )

    def key(self) -> str:
        """A stable string naming these exact numbers (used in cache keys)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the shorter side is resized to ``resize`` (torchvision rule)."""
        if width <= height:
            return self.resize, int(self.resize * height / width)
        return int(self.resize * width / height), self.resize

    def __call__(self, image: Image.Image) -> np.ndarray:
        """The normalised float32 array (3, crop, crop) for one RGB image."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        size = self.resized_size(*image.size)
        if size != image.size:
            image = image.resize(size, INTERPOLATIONS[self.interpolation])
        width, height = image.size
        top = round((height - self.crop) / 2.0)
        left = round((width - self.crop) / 2.0)
        image = image.crop((left, top, left + self.crop, top + self.crop))
        arr = np.asarray(image, dtype=np.float32)
        scale = np.asarray([1.0 / (255.0 * s) for s in self.std], dtype=np.float32)
        shift = np.asarray(
            [m / s for m, s in zip(self.mean, self.std, strict=True)], dtype=np.float32
        )
        arr = arr * scale - shift
        return np.ascontiguousarray(arr.transpose(2, 0, 1))
