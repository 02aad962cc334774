"""Explanations (Grad-CAM family) on a real mobilenet_v2 model fitted on three demo classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.backbones import BackboneRef, resolve_backbone
from headstart.bundle import write_bundle
from headstart.cli.main import main
from headstart.data import Task, load_rgb
from headstart.demo import demo_data_dir
from headstart.errors import ConfigError, ImageError
from headstart.explain import METHODS, Explanation, explain, explain_many, save_overlay
from headstart.explain import cam as cam_module
from headstart.explain.layers import cam_layer
from headstart.heads import create_head
from headstart.model import Model, load
from headstart.result import FitResult

CLASSES = ["hat", "pants", "shoes"]
CROP = 224


def _photo(cls: str, i: int = 0, split: str = "test") -> Path:
    return sorted((demo_data_dir() / split / cls).glob("*.jpg"))[i]


def _bundle(tmp: Path, ref: BackboneRef, n_per_class: int, weights: Path | None = None) -> Path:
    """Fit a logistic head on real backbone features of a few demo photos; write a bundle."""
    backbone = ref.build()
    paths = [_photo(c, i, "train") for c in CLASSES for i in range(n_per_class)]
    batch = np.stack([backbone.preprocessing(load_rgb(p)) for p in paths])
    with torch.inference_mode():
        features = backbone(torch.from_numpy(batch)).numpy()
    head = create_head("logistic", Cs=[0.1]).fit(features, [p.parent.name for p in paths])
    return write_bundle(
        tmp / "model",
        tasks=[Task("label", tuple(CLASSES))],
        heads={"label": head},
        backbone=ref,
        backbone_weights=weights,
    )


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _bundle(tmp_path_factory.mktemp("explain"), resolve_backbone("mobilenet_v2"), 6)


@pytest.fixture(scope="module")
def model(bundle: Path) -> Model:
    return load(bundle)


def _check_heatmap(heatmap: np.ndarray) -> None:
    assert heatmap.shape == (CROP, CROP)
    assert heatmap.dtype == np.float32
    assert heatmap.min() >= 0.0 and heatmap.max() <= 1.0
    assert heatmap.std() > 0.01  # a map, not a constant


@pytest.mark.parametrize("method", METHODS)
def test_each_method_gives_a_normalised_map_of_the_predicted_class(
    model: Model, method: str
) -> None:
    photo = _photo("shoes")
    expl = explain(model, photo, method=method)
    _check_heatmap(expl.heatmap)
    assert expl.method == method
    # The explained class and probability are the ones predict reports.
    (label, probability), *_ = model.predict([photo])[0].top
    assert expl.label == expl.predicted == label == "shoes"
    assert expl.probability == pytest.approx(probability, abs=1e-4)
    assert expl.overlay.size == (CROP, CROP) and expl.overlay.mode == "RGB"


def test_gradcam_looks_at_the_object_not_the_background(model: Model) -> None:
    """A shoe pasted off-centre on a white canvas: the map's mass sits on the shoe."""
    # 256 x 256 canvas: preprocessing keeps the size and centre-crops 224 (16 px off each side).
    canvas = Image.new("RGB", (256, 256), "white")
    shoe = load_rgb(_photo("shoes", 1)).resize((112, 112))
    canvas.paste(shoe, (16 + 100, 16 + 10))  # crop coordinates x 100..212, y 10..122
    expl = explain(model, canvas, method="gradcam", target="shoes")
    inside = np.zeros((CROP, CROP), dtype=bool)
    inside[10:122, 100:212] = True
    assert expl.heatmap[inside].mean() > 2 * expl.heatmap[~inside].mean()


def test_target_explains_another_class(model: Model) -> None:
    photo = _photo("shoes")
    default = explain(model, photo)
    hat = explain(model, photo, target="hat")
    assert (hat.label, hat.predicted) == ("hat", "shoes")
    proba, _ = model.predict_proba([photo])
    assert hat.probability == pytest.approx(proba[0, CLASSES.index("hat")], abs=1e-4)
    assert hat.predicted_probability == pytest.approx(default.probability, abs=1e-6)
    assert not np.allclose(hat.heatmap, default.heatmap, atol=0.05)


def test_bad_method_target_and_image_are_user_errors(model: Model, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'gradcamm'.*gradcam, gradcam\+\+, eigencam"):
        explain(model, _photo("hat"), method="gradcamm")
    with pytest.raises(ConfigError, match=r"'zebra'.*hat, pants, shoes"):
        explain(model, _photo("hat"), target="zebra")
    with pytest.raises(ConfigError, match=r"unknown task 'items'; this model/data has: label"):
        explain(model, _photo("hat"), task="items")
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("not an image")
    with pytest.raises(ImageError, match=r"notes\.jpg"):
        explain(model, not_image)
    with pytest.raises(ImageError, match=r"missing\.jpg"):
        explain(model, tmp_path / "missing.jpg")
    with pytest.raises(ConfigError, match="ndarray"):
        explain(model, np.zeros((8, 8, 3)))  # type: ignore[arg-type]


def test_explain_many_matches_explain_and_keeps_bad_images_in_place(
    model: Model, tmp_path: Path
) -> None:
    bad = tmp_path / "empty.png"
    bad.write_bytes(b"")
    photos = [_photo("hat"), bad, _photo("pants")]
    results = explain_many(model, photos, method="gradcam++")
    assert isinstance(results[1], ImageError) and "empty.png" in str(results[1])
    first, third = results[0], results[2]
    assert isinstance(first, Explanation) and isinstance(third, Explanation)
    assert (first.label, third.label) == ("hat", "pants")
    single = explain(model, _photo("pants"), method="gradcam++")
    np.testing.assert_allclose(third.heatmap, single.heatmap, atol=1e-3)


def test_pil_input_equals_path_input_and_network_is_built_once(
    bundle: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = []
    real_build = cam_module._build

    def counting_build(model: Model, task: Task) -> object:
        builds.append(model)
        return real_build(model, task)

    monkeypatch.setattr(cam_module, "_build", counting_build)
    fresh = load(bundle)
    photo = _photo("pants")
    from_path = explain(fresh, photo, method="eigencam")
    from_pil = explain(fresh, Image.open(photo), method="eigencam")
    explain_many(fresh, [photo, photo])
    assert len(builds) == 1
    np.testing.assert_allclose(from_pil.heatmap, from_path.heatmap, atol=1e-3)


def test_save_overlay_writes_a_png_atomically(model: Model, tmp_path: Path) -> None:
    expl = explain(model, _photo("hat"))
    path = save_overlay(expl, tmp_path / "sub" / "hat.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (CROP, CROP)
        assert np.array_equal(np.asarray(image), np.asarray(expl.overlay))
    assert sorted(p.name for p in path.parent.iterdir()) == ["hat.png"]  # no temp file left


def test_cam_layer_per_backbone_family() -> None:
    """The layer choice for families not bundled here (random weights: only structure matters)."""
    import timm
    import torchvision

    resnet = torchvision.models.resnet18(weights=None)
    assert cam_layer(resnet, "torchvision").module is resnet.layer4
    mobilenet = torchvision.models.mobilenet_v2(weights=None)
    assert cam_layer(mobilenet, "torchvision").module is mobilenet.features[-1]
    lite0 = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert cam_layer(lite0, "timm").module is lite0.bn2
    timm_resnet = timm.create_model("resnet18", pretrained=False)
    assert cam_layer(timm_resnet, "timm").module is timm_resnet.layer4


def test_vit_tokens_are_reshaped_to_the_patch_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A random tiny ViT through a ``timm:`` backbone with a weights file: the reshape path runs."""
    import functools

    import timm
    from safetensors.torch import save_file

    monkeypatch.setenv("HEADSTART_OFFLINE", "1")
    # Backbone() probes the model with a 64 x 64 input, which a fixed-size ViT refuses; a
    # dynamic-size ViT has the same weights and the same tokens at 224 (see the issue note).
    monkeypatch.setattr(
        timm, "create_model", functools.partial(timm.create_model, dynamic_img_size=True)
    )
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    weights = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(weights))
    ref = resolve_backbone("timm:vit_tiny_patch16_224", weights=weights)
    vit_model = load(_bundle(tmp_path, ref, 2, weights=weights))
    layer = cam_module._prepare(vit_model, vit_model.task()).layer
    assert layer.name == "blocks.11.norm1" and layer.reshape is not None
    tokens = torch.arange(2 * 197 * 3, dtype=torch.float32).reshape(2, 197, 3)
    grid = layer.reshape(tokens)
    assert grid.shape == (2, 3, 14, 14)
    assert torch.equal(grid[:, :, 0, 1], tokens[:, 2, :])  # class token dropped, row-major
    for method in ("gradcam", "eigencam"):
        _check_heatmap(explain(vit_model, _photo("hat"), method=method).heatmap)


def test_cli_one_photo_writes_the_default_name(
    bundle: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    photo = _photo("shoes")
    assert main(["explain", str(bundle), str(photo), "--method", "gradcam++"]) == 0
    out = capsys.readouterr().out
    written = tmp_path / f"{photo.stem}.cam.png"
    assert written.is_file() and "shoes" in out and written.name in out
    assert main(["explain", str(bundle), str(photo), "-o", "x/cam.png", "-t", "hat"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "x" / "cam.png").is_file() and "explained hat" in out


def test_cli_several_photos_go_to_a_folder_with_error_rows(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    photos = [str(_photo("hat")), str(_photo("pants")), str(bad)]
    code = main(["explain", str(bundle), *photos, "-o", str(tmp_path / "cams")])
    out = capsys.readouterr().out
    assert code == 1  # one photo failed
    assert sorted(p.name for p in (tmp_path / "cams").iterdir()) == sorted(
        f"{Path(p).stem}.cam.png" for p in photos[:2]
    )
    assert "error" in out and "broken.jpg" in out


def test_cli_user_errors_are_one_line(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("text")
    cases = [
        ([str(bundle), str(bad)], "bad.jpg"),
        ([str(bundle), str(_photo("hat")), "--target", "zebra"], "zebra"),
        ([str(tmp_path / "nomodel"), str(_photo("hat"))], "nomodel"),
        ([str(bundle), str(tmp_path / "nophoto.jpg")], "nophoto.jpg"),
    ]
    for argv, needle in cases:
        assert main(["explain", *argv, "-o", str(tmp_path / "o.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err


def test_each_task_of_a_two_task_model_is_explained(
    two_task_run: FitResult, composites: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = two_task_run.model
    photo = sorted((composites.parent / "test").glob("*.jpg"))[0]
    (prediction,) = model.predict([photo])
    left = explain(model, photo)
    assert left.task == "left" and left.label == prediction.tasks["left"].labels[0]
    _check_heatmap(left.heatmap)
    items = explain(model, photo, task="items", target="shoes")
    assert items.task == "items" and items.label == "shoes"
    proba, _ = model.predict_proba([photo], task="items")
    shoes = model.task("items").classes.index("shoes")
    assert items.probability == pytest.approx(proba[0, shoes], abs=1e-4)
    out = tmp_path / "cam.png"
    argv = ["explain", str(two_task_run.bundle_dir), str(photo), "--task", "items", "-o", str(out)]
    assert main(argv) == 0 and out.is_file()
    assert main([*argv[:-2], "--task", "colour", "-o", str(out)]) == 2
    assert "unknown task 'colour'" in capsys.readouterr().err


def test_gradcam_of_a_linear_head_runs_without_torch_and_equals_the_torch_map(
    model: Model, tmp_path: Path
) -> None:
    """A logistic head on average-pooled features: Grad-CAM is the CAM of the head's weights,
    computed through onnxruntime from a cached activation export; the torch path agrees."""
    from headstart.explain import linear

    images = [load_rgb(_photo(c)) for c in ("hat", "shoes")]
    task = model.task()
    fast = linear.explain_linear(model, task, images)
    assert fast is not None
    slow = cam_module._explain_torch(model, task, images, "gradcam", None)
    for a, b in zip(fast, slow, strict=True):
        assert (a.label, a.predicted) == (b.label, b.predicted)
        assert a.probability == pytest.approx(b.probability, abs=1e-4)
        assert np.corrcoef(a.heatmap.ravel(), b.heatmap.ravel())[0, 1] > 0.98
        assert np.abs(a.heatmap - b.heatmap).mean() < 0.03
    target = linear.explain_linear(model, task, images[:1], CLASSES.index("pants"))
    assert target is not None and target[0].label == "pants"


def test_the_model_gives_its_linear_heads_weights(model: Model) -> None:
    weights = model.linear_weights("label")
    assert weights is not None and weights.shape == (3, 1280)


def test_a_cached_explanation_needs_no_torch(model: Model) -> None:
    """Once the activation export exists, a new process explains with onnxruntime alone."""
    import subprocess
    import sys

    from headstart.explain.linear import activation_runner

    assert activation_runner(model) is not None  # exported (or found) here
    script = (
        "import sys\n"
        "from headstart.explain import explain\n"
        "from headstart.model import load\n"
        "from headstart.cache import CacheRoot\n"
        f"m = load({str(model.path)!r}, cache=CacheRoot.of({str(model.cache.path)!r}))\n"
        f"e = explain(m, {str(_photo('shoes'))!r})\n"
        "print(e.label, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["shoes", "False"]
