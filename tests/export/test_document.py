"""``model.onnx.json`` describes the preprocessing completely: a plain script (Pillow, numpy,
onnxruntime, json; no headstart) that follows its steps literally answers as ``headstart
predict`` does on a large JPEG (reduced-size decode), a 16-bit PNG (scaled to 8 bit), an
EXIF-rotated JPEG and an ordinary one; its rules match the loader's on every image mode; and
every file the export writes has the mode of the bundle's other files."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import pytest
from PIL import Image

import headstart
from headstart.backbones.preprocessing import Preprocessing
from headstart.bundle import read_bundle
from headstart.cache import CacheRoot
from headstart.data.images import (
    BACKGROUND,
    DRAFT_MODE,
    GREY_RANGES,
    STRETCH_FLOOR,
    TRANSPARENT_MODES,
    load_rgb,
    to_rgb,
)
from headstart.demo import demo_data_dir
from headstart.export import describe, export_model
from headstart.export.images import decode_batch
from headstart.export.recipe import preprocessing_steps
from headstart.export.runtime import _stale
from headstart.result import FitResult

#: The reference a user could write from model.onnx.json alone (kept free of headstart).
REFERENCE = '''\
"""Run model.onnx on image files, preprocessing them by model.onnx.json's steps, literally.

usage: python reference.py MODEL.onnx MODEL.onnx.json IMAGE... -> JSON {task: probabilities}
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def matches(image, alternatives):
    """Whether one alternative of a to_rgb rule's "if" holds (all its conditions)."""

    def holds(key, value):
        if key == "mode_in":
            return image.mode in value
        if key == "mode_startswith":
            return image.mode.startswith(value)
        if key == "info_has":
            return value in image.info
        if key == "info_lacks":
            return value not in image.info
        raise ValueError(f"unknown condition {key!r}")

    return any(all(holds(k, v) for k, v in alt.items()) for alt in alternatives)


def grey_to_8bit(image, rule):
    values = np.asarray(image)
    x = values.astype(np.float64)
    if x.ndim == 3:
        x = x[..., rule["channel"]]
    lo, hi = float(x.min()), float(x.max())
    table = rule["float" if values.dtype.kind == "f" else "integer"]
    for low, high in table["ranges"]:
        if lo >= low and hi <= high:
            full = high
            break
    else:
        x, full = x - lo, max(hi - lo, table["stretch_floor"])
    grey = np.clip(np.rint(x * (rule["scale"] / full)), 0, rule["scale"]).astype(np.uint8)
    return Image.fromarray(grey).convert("RGB")


def to_rgb(image, step):
    for rule in step["rules"]:
        if not matches(image, rule["if"]):
            continue
        if rule["do"] == "keep":
            return image
        if rule["do"] == "grey_to_8bit":
            return grey_to_8bit(image, rule)
        if rule["do"] == "composite":
            rgba = image.convert("RGBA")
            back = Image.new("RGBA", rgba.size, tuple(rule["background"]))
            return Image.alpha_composite(back, rgba).convert("RGB")
        if rule["do"] == "convert":
            return image.convert("RGB")
        raise ValueError(f"unknown to_rgb rule {rule['do']!r}")
    raise ValueError(f"no to_rgb rule for mode {image.mode}")


def preprocess(path, steps):
    """One image file -> one (3, crop, crop) row of the graph's input."""
    image = array = None
    for step in steps:
        op = step["op"]
        if op == "open":
            image = Image.open(path)
            if image.width * image.height > step["max_pixels"]:
                raise ValueError(f"{path}: too many pixels")
        elif op == "jpeg_draft":
            if image.format in step["formats"]:
                image.draft(step["mode"], tuple(step["size"]))
        elif op == "decode":
            image.load()
        elif op == "exif_transpose":
            image = ImageOps.exif_transpose(image)
        elif op == "to_rgb":
            image = to_rgb(image, step)
        elif op == "resize":
            side, (w, h) = step["shorter_side"], image.size
            size = (side, int(side * h / w)) if w <= h else (int(side * w / h), side)
            if size != image.size:
                image = image.resize(size, getattr(Image.Resampling, step["pillow_filter"]))
        elif op == "center_crop":
            (cw, ch), (w, h) = step["size"], image.size
            left, top = round((w - cw) / 2), round((h - ch) / 2)
            image = image.crop((left, top, left + cw, top + ch))
        elif op == "normalize":
            dtype = step["dtype"]
            scale = np.asarray([1.0 / (step["scale"] * s) for s in step["std"]], dtype=dtype)
            shift = np.asarray([m / s for m, s in zip(step["mean"], step["std"])], dtype=dtype)
            array = np.asarray(image, dtype=dtype) * scale - shift
        elif op == "layout":
            axes = [step["from"].index(axis) for axis in step["to"]]
            array = np.ascontiguousarray(array.transpose(axes), dtype=step["dtype"])
        else:
            raise ValueError(f"unknown preprocessing step {op!r}")
    return array


def calibrate(p, entry, multi_label):
    """The document's calibration: softmax(log(p) / T), or sigmoid(logit(p) / T) per label."""
    with np.errstate(divide="ignore"):
        if multi_label:
            t = np.asarray(entry["temperatures"], dtype=np.float64)
            return 1.0 / (1.0 + np.exp(-(np.log(p) - np.log1p(-p)) / t))
        z = np.log(p) / entry["temperature"]
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def main(model, document, images):
    with open(document, encoding="utf-8") as fh:
        doc = json.load(fh)
    batch = np.stack([preprocess(path, doc["preprocessing"]["steps"]) for path in images])
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    outputs = session.run([t["output"] for t in doc["tasks"]], {doc["input"]["name"]: batch})
    temperatures = (doc.get("calibration") or {}).get("tasks", {})
    answer = {}
    for task, p in zip(doc["tasks"], outputs):
        p = np.asarray(p, dtype=np.float64)
        if task["name"] in temperatures:
            p = calibrate(p, temperatures[task["name"]], task["multi_label"])
        answer[task["name"]] = p.tolist()
    return answer


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3:])))
'''

#: The demo photos the test images are made of.
PHOTOS = sorted((demo_data_dir() / "test" / "shoes").glob("*.jpg"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference script, written to a file (it must run on its own)."""
    path = tmp_path_factory.mktemp("reference") / "reference.py"
    path.write_text(REFERENCE, encoding="utf-8")
    assert "headstart" not in REFERENCE
    return path


@pytest.fixture(scope="module")
def exported(plain_run: FitResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's plain bundle, exported (int8 too) beside its other files."""
    bundle = tmp_path_factory.mktemp("document") / "model"
    shutil.copytree(plain_run.bundle_dir, bundle)
    export_model(bundle, check_images=PHOTOS[:2], quantize="int8")
    return bundle


def _grey16(photo: Path) -> Image.Image:
    """A real photo as a 16-bit grey image whose values span 0..65535 (not multiples of 257)."""
    grey = np.asarray(Image.open(photo).convert("L"), dtype=np.float64)
    unit = (grey - grey.min()) / (grey.max() - grey.min())
    return Image.fromarray(np.rint(unit**0.8 * 65535).astype(np.uint16))


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """A large JPEG (decoded at 1/4 scale), a 16-bit grey PNG, a large EXIF-rotated JPEG and
    an ordinary small JPEG, all made of real photos."""
    root = tmp_path_factory.mktemp("images")
    photo = Image.open(PHOTOS[0]).convert("RGB")
    photo.resize((2000, 1500), Image.Resampling.BICUBIC).save(root / "large.jpg", quality=90)
    _grey16(PHOTOS[1]).save(root / "grey16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 clockwise to display
    rotated = Image.open(PHOTOS[2]).convert("RGB").resize((1200, 900), Image.Resampling.BICUBIC)
    rotated.save(root / "rotated.jpg", quality=90, exif=exif)
    shutil.copy(PHOTOS[3], root / "small.jpg")
    return [root / name for name in ("large.jpg", "grey16.png", "rotated.jpg", "small.jpg")]


def _run_reference(script: Path, bundle: Path, images: list[Path]) -> dict[str, np.ndarray]:
    model = bundle / "model.onnx"
    argv = [sys.executable, str(script), str(model), f"{model}.json", *map(str, images)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    return {name: np.asarray(p) for name, p in json.loads(done.stdout).items()}


def test_the_images_take_the_loaders_special_paths(images: list[Path]) -> None:
    large, grey16, rotated, _ = images
    with Image.open(large) as im:
        im.draft("RGB", (256, 256))
        assert im.size == (500, 375)  # 1/4 scale in the DCT domain, not 2000 x 1500
    with Image.open(grey16) as im:
        values = np.asarray(im)
        assert im.mode == "I;16" and values.min() == 0 and values.max() == 65535
    assert load_rgb(rotated).size == (900, 1200)


def test_a_plain_script_following_the_document_answers_as_predict(
    exported: Path, images: list[Path], reference: Path, shared_cache: Path
) -> None:
    model = headstart.load(exported, cache=CacheRoot.of(shared_cache))
    want, failures = model.task_proba(images)
    assert failures == {}
    got = _run_reference(reference, exported, images)
    assert got.keys() == want.keys()
    for task, proba in want.items():
        diff = np.abs(got[task] - proba).max(axis=1)
        print(f"reference vs predict, max abs difference per image: {diff}")  # for -s
        assert diff.max() <= 1e-4, dict(zip([p.name for p in images], diff, strict=True))
    # the inputs themselves, where a missed step shows even when the model is sure anyway
    doc = json.loads((exported / "model.onnx.json").read_text())
    steps = doc["preprocessing"]["steps"]
    script = _load_reference(reference)
    kept, batch, _ = decode_batch(images, model.backbone_ref.preprocessing)
    assert kept == list(range(len(images)))
    for path, row in zip(images, batch, strict=True):
        np.testing.assert_allclose(
            script.preprocess(path, steps), row, atol=1e-6, err_msg=path.name
        )
    assert doc["format_version"] == 3
    assert [s["op"] for s in doc["preprocessing"]["steps"]] == [
        "open", "jpeg_draft", "decode", "exif_transpose", "to_rgb", "resize", "center_crop",
        "normalize", "layout",
    ]  # fmt: skip
    draft = doc["preprocessing"]["steps"][1]
    assert draft["size"] == [256, 256] and "image.draft('RGB', (256, 256))" in draft["text"]


def _load_reference(script: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("headstart_reference", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _every_mode() -> dict[str, Image.Image]:
    """Small images of every mode the loader meets, with values at each scaling boundary."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    ints = {
        "i16-8bit": np.array([[0, 128, 255]], np.uint16),
        "i16-16bit": np.array([[0, 256, 32768, 65535]], np.uint16),
        "i16-odd": np.array([[1, 129, 385, 64250]], np.uint16),  # x * 255 / 65535 ends in .5
        "i32-negative": np.array([[-5, 0, 300]], np.int32),
        "i32-large": np.array([[0, 70000, 123456]], np.int32),
        "i32-flat": np.array([[-7, -7]], np.int32),
    }
    floats = {
        "f-unit": np.array([[0.0, 0.25, 1.0]], np.float32),
        "f-255": np.array([[0.0, 1.5, 254.6]], np.float32),
        "f-wide": np.array([[-2.0, 0.5, 300.0]], np.float32),
    }
    out = {name: Image.fromarray(a) for name, a in {**ints, **floats}.items()}
    out |= {mode.lower(): rgb.convert(mode) for mode in ("L", "1", "CMYK", "YCbCr", "P")}
    out["rgba"] = Image.fromarray(rng.integers(0, 256, (6, 5, 4), dtype=np.uint8))
    out["la"], out["pa"] = out["rgba"].convert("LA"), out["rgba"].convert("PA")
    keyed = rgb.convert("P")
    keyed.info["transparency"] = 3
    out["p-transparency"] = keyed
    colour_key = rgb.copy()
    colour_key.info["transparency"] = tuple(int(v) for v in np.asarray(rgb)[0, 0])
    out["rgb-transparency"], out["rgb"] = colour_key, rgb
    return out


def test_the_documents_rules_match_the_loader_on_every_mode(reference: Path) -> None:
    """Colour conversion equal to the byte; resize, crop and normalisation equal to float32
    rounding, for a non-default preprocessing (the document follows its numbers)."""
    script = _load_reference(reference)
    prep = Preprocessing(
        resize=40, crop=33, mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.25), interpolation="bicubic"
    )
    steps = json.loads(json.dumps(preprocessing_steps(prep)))
    (to_rgb_step,) = [s for s in steps if s["op"] == "to_rgb"]
    later = [s for s in steps if s["op"] in ("resize", "center_crop", "normalize", "layout")]
    for name, image in _every_mode().items():
        mine, theirs = script.to_rgb(image, to_rgb_step), to_rgb(image)
        assert mine.mode == "RGB", name
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs), err_msg=name)
    for size in ((41, 77), (120, 40), (40, 40), (7, 9)):
        image = to_rgb(_every_mode()["rgb"].resize(size))
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        got = script.preprocess(io.BytesIO(buffer.getvalue()), [*steps[:5], *later])
        np.testing.assert_allclose(got, prep(image), atol=1e-6, err_msg=str(size))


def test_the_documents_numbers_are_the_loaders_constants() -> None:
    steps = {
        s["op"]: s for s in preprocessing_steps(Preprocessing(256, 224, (0.5,) * 3, (0.25,) * 3))
    }
    assert steps["jpeg_draft"]["mode"] == DRAFT_MODE
    rules = {rule["do"]: rule for rule in steps["to_rgb"]["rules"]}
    grey, composite = rules["grey_to_8bit"], rules["composite"]
    for kind in ("integer", "float"):
        assert grey[kind]["ranges"] == [list(r) for r in GREY_RANGES[kind]]
        assert grey[kind]["stretch_floor"] == STRETCH_FLOOR[kind]
    assert composite["background"] == list(BACKGROUND)
    assert set(composite["if"][0]["mode_in"]) == TRANSPARENT_MODES


@pytest.mark.parametrize("size", [(2100, 1400), (511, 900), (1024, 1024), (300, 200)])
def test_the_documents_jpeg_decode_matches_the_loader(
    reference: Path, tmp_path: Path, size: tuple[int, int]
) -> None:
    script = _load_reference(reference)
    prep = Preprocessing(resize=256, crop=224, mean=(0.5,) * 3, std=(0.25,) * 3)
    steps = json.loads(json.dumps(preprocessing_steps(prep)))
    path = tmp_path / "photo.jpg"
    Image.open(PHOTOS[0]).convert("RGB").resize(size).save(path, quality=85)
    np.testing.assert_allclose(
        script.preprocess(path, steps), prep(load_rgb(path, draft_size=prep.resize)), atol=1e-6
    )


def test_every_exported_file_has_the_bundles_mode(exported: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    expected = 0o666 & ~umask
    names = ("model.json", "head.safetensors", "model.onnx", "model.onnx.json", "model.int8.onnx")
    modes = {name: oct((exported / name).stat().st_mode & 0o777) for name in names}
    assert modes == dict.fromkeys(names, oct(expected))  # as open() makes them (umask)
    assert sorted(p.name for p in exported.iterdir() if p.name.startswith(".")) == []


def test_a_format_2_export_is_stale(exported: Path) -> None:
    """An export whose document predates the complete preprocessing is exported anew."""
    fresh: dict[str, Any] = json.loads(json.dumps(describe(read_bundle(exported))))
    assert _stale(exported / "model.onnx", fresh) is None
    older = exported.parent / "older"
    shutil.copytree(exported, older)
    proto = onnx.load(str(older / "model.onnx"))
    for prop in proto.metadata_props:
        if prop.key == "headstart":
            prop.value = json.dumps({**json.loads(prop.value), "format_version": 2})
    onnx.save(proto, str(older / "model.onnx"))
    assert _stale(older / "model.onnx", fresh) == "exported by an older headstart"
