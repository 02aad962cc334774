"""The preprocessing recipe written into ``model.onnx.json``: every step from an image file to
the graph's input, each with its exact parameters, in the order headstart's loader runs them
(:func:`headstart.data.images.load_rgb` with ``draft_size=preprocessing.resize``, then
:class:`~headstart.backbones.preprocessing.Preprocessing`).

Each step is ``{"op": ..., parameters..., "text": ...}``: a program reads the parameters, a person
reads the text (which says the same, numbers included).  The ``to_rgb`` step holds ordered rules
(the first whose ``if`` matches applies); ``if`` is a list of alternatives, each a dict of
conditions that must all hold (``mode_in``, ``mode_startswith``, ``info_has``, ``info_lacks``; an
empty dict always holds).  ``tests/export/test_document.py`` holds a plain script (Pillow, numpy,
onnxruntime) that follows these steps literally and matches ``headstart predict`` to 1e-4.

The numbers are the loader's own constants (pixel limit, draft mode, transparent modes and
background, the 8-bit scaling ranges, interpolation filters, the preprocessing itself), never
copies; the test above also checks the rules against the loader for every image mode.
"""

from __future__ import annotations

from typing import Any

from headstart.backbones.preprocessing import INTERPOLATIONS, Preprocessing
from headstart.data.images import (
    BACKGROUND,
    DEFAULT_MAX_PIXELS,
    DRAFT_MODE,
    GREY_RANGES,
    STRETCH_FLOOR,
    TRANSPARENT_MODES,
)

__all__ = ["preprocessing_steps"]

#: One 8-bit sample's full scale: pixels are 0..255 after decoding.
_EIGHT_BIT = 255
#: JPEG reduced-size decoding: Pillow's (libjpeg's) scale divisors, largest first.
_DRAFT_DIVISORS = (8, 4, 2, 1)
#: How ``to_rgb`` scales one-channel integer / float samples to 8 bit (the loader's table).
_GREY_SCALING: dict[str, dict[str, Any]] = {
    kind: {"ranges": [list(r) for r in GREY_RANGES[kind]], "stretch_floor": STRETCH_FLOOR[kind]}
    for kind in ("integer", "float")
}
_BACKGROUND = list(BACKGROUND)


def _open() -> dict[str, Any]:
    return {
        "op": "open",
        "library": "Pillow",
        "max_pixels": DEFAULT_MAX_PIXELS,
        "text": (
            "Open the file with Pillow (Image.open); an image of more than "
            f"{DEFAULT_MAX_PIXELS:,} pixels (width x height) is refused.  Pillow gives a 16-bit "
            "grey PNG as mode I;16 (scaled in to_rgb below) and a 16-bit colour PNG as 8 bits "
            "per channel, each sample's high byte (value >> 8)"
        ),
    }


def _draft(prep: Preprocessing) -> dict[str, Any]:
    size = prep.resize  # the loaders' rule: load_rgb(path, draft_size=preprocessing.resize)
    divisors = ", ".join(str(d) for d in _DRAFT_DIVISORS)
    return {
        "op": "jpeg_draft",
        "formats": ["JPEG", "MPO"],
        "mode": DRAFT_MODE,
        "size": [size, size],
        "divisors": list(_DRAFT_DIVISORS),
        "pillow": f"image.draft({DRAFT_MODE!r}, ({size}, {size}))",
        "text": (
            f"JPEG files only (Pillow formats JPEG and MPO), before the pixels are decoded: "
            f"request a reduced-size decode, image.draft({DRAFT_MODE!r}, ({size}, {size})).  "
            f"The decoder scales by 1/s in the DCT domain, s the largest of {divisors} with "
            f"s <= min(width // {size}, height // {size}); the image decodes to "
            f"(ceil(width / s), ceil(height / s)) pixels, so a JPEG with a side under "
            f"{2 * size} px decodes at full size.  The requested mode {DRAFT_MODE!r} changes "
            "no colour"
        ),
    }


def _decode() -> dict[str, Any]:
    return {
        "op": "decode",
        "pillow": "image.load()",
        "text": "Decode the pixels (image.load()); a truncated or corrupt file is an error",
    }


def _exif() -> dict[str, Any]:
    return {
        "op": "exif_transpose",
        "pillow": "ImageOps.exif_transpose(image)",
        "text": (
            "Apply the EXIF Orientation tag to the decoded pixels (Pillow also reads an XMP "
            "tiff:Orientation): 2 mirror left-right, 3 rotate 180, 4 mirror top-bottom, "
            "5 transpose, 6 rotate 90 clockwise, 7 transverse, 8 rotate 90 counter-clockwise; "
            "a malformed EXIF block leaves the image as it is"
        ),
    }


def _to_rgb() -> dict[str, Any]:
    transparent = sorted(TRANSPARENT_MODES)
    integer, floating = _GREY_SCALING["integer"], _GREY_SCALING["float"]
    grey = (
        f"take the samples as float64 (the first channel when there are several); with "
        f"lo, hi = their min, max, full scale = the high end of the first range holding "
        f"[lo, hi]: integer modes {integer['ranges']}, float mode F {floating['ranges']}; "
        f"when none holds, subtract lo and full scale = max(hi - lo, "
        f"{integer['stretch_floor']:g} (integer) or {floating['stretch_floor']:g} (float)); "
        f"grey = clip(round_half_even(x * ({_EIGHT_BIT} / full scale)), 0, {_EIGHT_BIT}) as "
        "uint8, copied to R, G and B"
    )
    rules: list[dict[str, Any]] = [
        {
            "if": [{"mode_in": ["RGB"], "info_lacks": "transparency"}],
            "do": "keep",
            "text": "mode RGB without a 'transparency' entry in image.info: keep it",
        },
        {
            "if": [{"mode_startswith": "I"}, {"mode_in": ["F"]}],
            "do": "grey_to_8bit",
            "channel": 0,
            "scale": _EIGHT_BIT,
            **_GREY_SCALING,
            "rounding": "half_to_even",
            "text": f"modes I, I;16, I;16B, ... (starting with 'I') and F: {grey}",
        },
        {
            "if": [{"mode_in": transparent}, {"info_has": "transparency"}],
            "do": "composite",
            "background": _BACKGROUND,
            "text": (
                f"modes {', '.join(transparent)}, or any mode with a 'transparency' entry in "
                "image.info (a palette or colour key): image.convert('RGBA'), alpha-composite "
                f"it over opaque white {_BACKGROUND} (Image.alpha_composite), then convert('RGB')"
            ),
        },
        {
            "if": [{}],
            "do": "convert",
            "text": (
                "any other mode (L, P, 1, CMYK, YCbCr, ...): Pillow's image.convert('RGB') "
                "(palette lookup, grey copied to R, G and B, Pillow's CMYK formula)"
            ),
        },
    ]
    return {
        "op": "to_rgb",
        "rules": rules,
        "text": "Convert to 8-bit RGB by the first rule that matches the image's mode",
    }


def _resize(prep: Preprocessing) -> dict[str, Any]:
    size, name = prep.resize, prep.interpolation
    pillow = INTERPOLATIONS[name]
    return {
        "op": "resize",
        "shorter_side": size,
        "interpolation": name,
        "pillow_filter": pillow.name,
        "text": (
            f"Resize so the shorter side is {size} px: (w, h) -> ({size}, int({size} * h / w)) "
            f"when w <= h, else (int({size} * w / h), {size}) (floating-point division, then "
            f"truncation); skip when the size is already that; "
            f"image.resize(size, Image.Resampling.{pillow.name}) ({name}, Pillow's antialiasing "
            "filter: the kernel widens with the scale factor)"
        ),
    }


def _crop(prep: Preprocessing) -> dict[str, Any]:
    c = prep.crop
    return {
        "op": "center_crop",
        "size": [c, c],
        "rounding": "half_to_even",
        "text": (
            f"Center-crop {c} x {c}: left = round((w - {c}) / 2), top = round((h - {c}) / 2) "
            f"(round half to even), image.crop((left, top, left + {c}, top + {c}))"
        ),
    }


def _normalize(prep: Preprocessing) -> dict[str, Any]:
    mean, std = list(prep.mean), list(prep.std)
    return {
        "op": "normalize",
        "scale": _EIGHT_BIT,
        "mean": mean,
        "std": std,
        "dtype": "float32",
        "text": (
            f"As float32, per RGB channel: x * (1 / ({_EIGHT_BIT} * std)) - mean / std, i.e. "
            f"(x / {_EIGHT_BIT} - mean) / std, with mean {mean} and std {std}"
        ),
    }


def _layout(prep: Preprocessing, input_name: str) -> dict[str, Any]:
    return {
        "op": "layout",
        "from": "HWC",
        "to": "CHW",
        "batch": "NCHW",
        "dtype": "float32",
        "text": (
            f"Transpose HWC -> CHW and stack the images into a float32 batch of shape "
            f"(N, 3, {prep.crop}, {prep.crop}), the graph's input '{input_name}'"
        ),
    }


def preprocessing_steps(prep: Preprocessing, input_name: str = "images") -> list[dict[str, Any]]:
    """Every step from an image file to one row of the graph's input ``input_name``, with its
    parameters."""
    return [
        _open(),
        _draft(prep),
        _decode(),
        _exif(),
        _to_rgb(),
        _resize(prep),
        _crop(prep),
        _normalize(prep),
        _layout(prep, input_name),
    ]
