"""Structured (channel) pruning: a narrower network with fewer parameters and MACs, recorded in
its weights file so the bundle rebuilds it without pickle; the recovery run's bundle reloads,
predicts as it did in memory, embeds alike in torch and ONNX Runtime and exports with parity;
a tampered record, an unprunable network and a fused bundle are one-line errors.

The end-to-end runs use timm's ``test_efficientnet`` (random weights, a few seconds of CPU) on
2 classes x 8 training photos of the demo set.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import headstart
from headstart.backbones import Preprocessing, resolve_backbone
from headstart.backbones.model import ARCHITECTURE_KEY, Backbone, save_weights
from headstart.cli.main import main
from headstart.config import load_config
from headstart.errors import BackboneError, ConfigError, HeadstartError, WeightsError
from headstart.finetune.prune import Pruning, prune, prune_backbone, read_pruning
from salt import copy_demo

TINY = "timm:test_efficientnet"


@pytest.fixture(scope="module")
def tiny(tiny_net: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(data folder with train/validation/test, random tiny weights file), private cache."""
    root = tmp_path_factory.mktemp("prune")
    data = copy_demo(root / "data", ("hat", "shoes"), {"train": 8, "validation": 3, "test": 3})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        yield data, tiny_net


@pytest.fixture(scope="module")
def source(tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A probe bundle of the tiny network: what gets pruned."""
    data, weights = tiny
    out = tmp_path_factory.mktemp("runs") / "probe"
    args = ["fit", str(data), "-o", str(out), "-b", TINY, "--weights", str(weights)]
    assert main([*args, "--set", "eval.n_boot=0", "--no-report", "-q"]) == 0
    return out / "model"


def _recipe() -> object:
    return load_config(
        overrides=[
            "eval.n_boot=0",
            "train.epochs=1",
            "train.frozen_epochs=0",
            "train.batch_size=8",
        ]
    )


@pytest.fixture(scope="module")
def pruned(
    source: Path, tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> headstart.FitResult:
    data, _ = tiny
    out = tmp_path_factory.mktemp("runs") / "pruned"
    return prune(source, data, _recipe(), out, ratio=0.3, progress=False)  # type: ignore[arg-type]


def _one_line(exc: pytest.ExceptionInfo[HeadstartError]) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# -- the network --------------------------------------------------------------------------------
@pytest.mark.slow
def test_mobilenet_loses_channels_by_eights_keeps_its_features_and_rebuilds(
    tmp_path: Path,
) -> None:
    ref = resolve_backbone("mobilenet_v2")
    backbone = ref.build()
    convs_before = {n: m.out_channels for n, m in backbone.model.named_modules() if _conv(m)}
    report = prune_backbone(backbone, 0.3)
    assert report.params_after < 0.75 * report.params_before
    assert report.macs_after < 0.6 * report.macs_before
    assert backbone.feature_dim == 1280  # the pooled features keep their width
    convs = {n: m.out_channels for n, m in backbone.model.named_modules() if _conv(m)}
    narrowed = [n for n in convs if convs[n] < convs_before[n]]
    assert len(narrowed) > 30 and all(convs[n] % 8 == 0 for n in narrowed)
    assert convs["features.18.0"] == 1280  # the last convolution: the features
    assert set(backbone.architecture) >= set(narrowed)
    # the weights file carries the shapes; the registry's architecture rebuilds from it alone
    path = tmp_path / "pruned.safetensors"
    save_weights(backbone, path)
    rebuilt = resolve_backbone("mobilenet_v2", path).build()
    assert rebuilt.architecture == backbone.architecture
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        np.testing.assert_allclose(rebuilt(x).numpy(), backbone(x).numpy(), atol=1e-5)
    assert resolve_backbone("mobilenet_v2", path).weights_sha256 != ref.weights_sha256


def _conv(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Conv2d) and module.groups == 1


def _timm_backbone(arch: str) -> Backbone:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False)
    prep = Preprocessing(160, 160, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    return Backbone(f"timm:{arch}", model, "timm", prep, "")


@pytest.mark.filterwarnings("ignore:Unwrapped parameters")  # convnext's layer scales
@pytest.mark.parametrize(
    ("arch", "needle"),
    [
        ("test_vit", "has attention layers"),
        ("test_convnext", "changed 'stem.1' (LayerNorm2d), a layer its weights file cannot record"),
    ],
)
def test_networks_that_cannot_be_pruned_and_recorded_are_refused(arch: str, needle: str) -> None:
    with pytest.raises(BackboneError) as exc:
        prune_backbone(_timm_backbone(arch), 0.3)
    assert needle in _one_line(exc)


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_a_ratio_outside_0_1_is_refused(ratio: float) -> None:
    with pytest.raises(ConfigError, match="between 0 and 1"):
        prune_backbone(_timm_backbone("test_efficientnet"), ratio)


# -- the run and its bundle ---------------------------------------------------------------------
def test_the_run_records_the_pruning_and_its_bundle_predicts_as_in_memory(
    pruned: headstart.FitResult, source: Path
) -> None:
    facts = json.loads((pruned.run_dir / "finetune.json").read_text())
    block = facts["pruning"]
    assert block["ratio"] == 0.3 and block["modules_changed"] > 0
    assert block["params_after"] < block["params_before"]
    assert block["macs_after"] < block["macs_before"]
    assert read_pruning(pruned.run_dir) == Pruning(
        **{k: v for k, v in block.items() if k != "seconds"}
    )
    # the recovery is a distillation from the unpruned model
    assert facts["strategy"] == "distill" and facts["epochs_run"] == 1
    teacher = json.loads((pruned.run_dir / "distill.json").read_text())["teacher"]
    assert Path(teacher) == source.resolve()
    assert read_pruning(source.parent) is None
    # the bundle's weights carry the architecture; a fresh Model rebuilds the pruned network
    weights = pruned.bundle_dir / "backbone.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        assert ARCHITECTURE_KEY in (handle.metadata() or {})
    model = headstart.load(pruned.bundle_dir)
    network = model.backbone_ref.build()
    assert network.architecture and network.feature_dim == model.backbone_ref.feature_dim
    params = sum(p.numel() for p in network.model.parameters())
    assert params == block["params_after"]
    test = [s.path for s in pruned.manifest.split("test")]
    proba, failures = model.predict_proba(test)
    assert not failures
    np.testing.assert_allclose(proba, pruned.probabilities["test"]["label"], atol=1e-3)
    # the original bundle is untouched: still its own, unpruned network
    assert not headstart.load(source).backbone_ref.build().architecture


def test_the_pruned_bundle_embeds_alike_in_torch_and_onnx_and_exports_with_parity(
    pruned: headstart.FitResult, tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    from headstart.export import export_model

    data, _ = tiny
    model = headstart.load(pruned.bundle_dir)
    photos = sorted((data / "test").rglob("*.jpg"))
    images = [Image.open(p).convert("RGB") for p in photos]
    by_torch = model.predict_images(images, engine="torch")["label"]
    by_onnx = headstart.load(pruned.bundle_dir).predict_images(images, engine="onnx")["label"]
    np.testing.assert_allclose(by_onnx, by_torch, atol=1e-4)
    result = export_model(pruned.bundle_dir, output=tmp_path / "model.onnx", check_images=data)
    assert result.path.is_file() and result.max_abs_diff <= 1e-4


# -- damaged or unfitting records -----------------------------------------------------------------
def _retag(source: Path, dest: Path, edit: Callable[[dict[str, object]], object]) -> Path:
    """A copy of ``source`` whose architecture record is ``edit``ed (its return value replaces
    the record when it returns one)."""
    with safe_open(str(source), framework="pt") as handle:
        record = json.loads((handle.metadata() or {})[ARCHITECTURE_KEY])
    changed = edit(record)
    text = changed if isinstance(changed, str) else json.dumps(changed or record)
    save_file(load_file(str(source)), str(dest), metadata={ARCHITECTURE_KEY: text})
    return dest


def _first_conv(record: dict[str, object]) -> dict[str, object]:
    modules = record["modules"]
    assert isinstance(modules, dict)
    return next(v for v in modules.values() if v["type"] == "Conv2d")


def _set(key: str, value: object) -> Callable[[dict[str, object]], None]:
    return lambda record: _first_conv(record).__setitem__(key, value)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (_set("out_channels", 2048), "does not match its weights"),
        (_set("out_channels", -8), "out_channels=-8"),
        (_set("in_channels", "16"), "in_channels='16'"),
        (_set("groups", 5), "groups=5, which does not divide"),
        (_set("type", "Linear"), "a 'Linear'; it is a Conv2d"),
        (lambda r: r["modules"].update({"nowhere.conv": {"type": "Conv2d"}}), "names 'nowhere"),  # type: ignore[attr-defined]
        (lambda r: r.update({"version": 99}), "not version 1"),
        (lambda r: "{not json", "is not JSON"),
    ],
)
def test_a_tampered_architecture_record_is_one_line_naming_the_file(
    pruned: headstart.FitResult,
    tmp_path: Path,
    edit: Callable[[dict[str, object]], object],
    needle: str,
) -> None:
    bad = _retag(pruned.bundle_dir / "backbone.safetensors", tmp_path / "bad.safetensors", edit)
    with pytest.raises(BackboneError) as exc:
        resolve_backbone(TINY, bad).build()
    text = _one_line(exc)
    assert str(bad) in text and needle in text


def test_pruned_weights_without_their_record_do_not_fit_in_one_line(
    pruned: headstart.FitResult, tmp_path: Path
) -> None:
    bare = tmp_path / "bare.safetensors"
    save_file(load_file(str(pruned.bundle_dir / "backbone.safetensors")), str(bare))
    with pytest.raises(WeightsError) as exc:
        resolve_backbone(TINY, bare).build()
    assert "in the file" in _one_line(exc) and str(bare) in str(exc.value)


def test_data_of_other_tasks_is_refused_before_training(
    source: Path, tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    data = copy_demo(tmp_path / "other", ("hat", "pants"), {"train": 4, "validation": 2})
    with pytest.raises(HeadstartError) as exc:
        prune(source, data, _recipe(), tmp_path / "out", progress=False)  # type: ignore[arg-type]
    assert "does not know: pants" in _one_line(exc)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_fused_bundle_is_refused_in_one_line(tmp_path: Path, cache_dir: Path) -> None:
    data = copy_demo(tmp_path / "d", ("hat", "shoes"), {"train": 4, "validation": 2, "test": 2})
    fused = tmp_path / "fused"
    args = ["fit", str(data), "-o", str(fused), "-b", "mobilenet_v2+efficientnet_lite0"]
    assert main([*args, "--set", "eval.n_boot=0", "--no-report", "-q"]) == 0
    with pytest.raises(BackboneError) as exc:
        prune(fused / "model", data, _recipe(), tmp_path / "out", progress=False)  # type: ignore[arg-type]
    assert "pruning needs one backbone" in _one_line(exc)
    assert not (tmp_path / "out").exists()
