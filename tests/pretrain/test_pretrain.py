"""``headstart pretrain``: self-supervised adaptation of a backbone's last blocks, the backbone
folder it writes (resolved like a name by fit, rank-backbones, export), kill-and-resume, and
one-line errors.

The network is timm's ``test_efficientnet`` with random weights and the images are 28 demo
photos, at 64 px, so a run takes seconds of CPU.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("lightly", reason="headstart pretrain needs lightly (pip install lightly)")

import torch
from safetensors.torch import load_file

import headstart
from headstart.backbones import resolve_backbone
from headstart.backbones.folder import is_folder_name
from headstart.cli.main import main
from headstart.config import load_config
from headstart.errors import BackboneError, WeightsError
from headstart.features.store import model_key
from headstart.pretrain import PretrainOptions, pretrain
from salt import copy_demo, kill_after_checkpoint

REPO = Path(__file__).resolve().parents[2]
TINY = "timm:test_efficientnet"
SMALL = ("--image-size", "64", "--batch-size", "8", "-q")


@pytest.fixture(scope="module")
def tiny(tiny_net: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(a folder of 14 photos in class folders, random tiny weights), private cache."""
    root = tmp_path_factory.mktemp("pretrain")
    data = copy_demo(root / "data", ("hat", "shoes"), {"train": 8, "validation": 3, "test": 3})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEADSTART_CACHE", str(root / "cache"))
        yield data, tiny_net


def _config(weights: Path, *extra: str) -> object:
    overrides = [f"backbone.name={TINY}", f"backbone.weights={weights}", "train.accelerator=cpu"]
    return load_config(overrides=[*overrides, *extra])


@pytest.fixture(scope="module")
def adapted(tiny: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    data, weights = tiny
    out = tmp_path_factory.mktemp("adapted") / "simclr"
    options = PretrainOptions(image_size=64, epochs=2, batch_size=8)
    result = pretrain(data, out, config=_config(weights), options=options, progress=False)  # type: ignore[arg-type]
    assert result.steps == 8 and result.epochs_run == 2 and result.images == 28
    return out


def test_the_folder_records_its_base_and_what_trained(
    adapted: Path, tiny: tuple[Path, Path]
) -> None:
    record = json.loads((adapted / "backbone.json").read_text())
    base = resolve_backbone(TINY, tiny[1])
    assert record["format"] == 1 and record["base"] == TINY and record["method"] == "simclr"
    assert record["base_weights_sha256"] == base.weights_sha256
    assert record["trained"] == ["blocks.4", "conv_head", "bn2"]
    assert json.loads((adapted / "pretrain.json").read_text())["finished"] is True
    assert not (adapted / "checkpoints").exists()
    assert (adapted / "logs" / "metrics.csv").is_file()


def test_only_the_last_blocks_change_and_so_do_the_features(
    adapted: Path, tiny: tuple[Path, Path]
) -> None:
    base, ref = resolve_backbone(TINY, tiny[1]), resolve_backbone(str(adapted))
    assert ref.name == TINY and ref.weights_sha256 != base.weights_sha256
    assert ref.preprocessing == base.preprocessing
    before, after = load_file(str(base.weights_path)), load_file(str(ref.weights_path))
    changed = {k.split(".")[0] + ("." + k.split(".")[1] if k.startswith("blocks") else "")
               for k in before if not torch.equal(before[k], after[k])}  # fmt: skip
    assert changed and changed <= {"blocks.4", "conv_head", "bn2"}
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        assert not torch.allclose(base.build()(x), ref.build()(x))
    assert model_key(ref, "torch") != model_key(base, "torch")


def test_fit_takes_the_folder_as_a_backbone(
    adapted: Path, tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    data, _ = tiny
    config = load_config(
        overrides=[
            f"backbone.name={adapted}",
            "eval.n_boot=0",
            f"extract.cache_dir={tmp_path / 'c'}",
        ]
    )
    result = headstart.fit(data, tmp_path / "run", config=config, progress=False)
    assert result.backbone.weights_sha256 == resolve_backbone(str(adapted)).weights_sha256
    model = headstart.load(tmp_path / "run" / "model")
    assert len(model.predict([data / "test"])) == 6


@pytest.mark.parametrize("method", ["byol", "dino"])
def test_byol_and_dino_train_the_tail(method: str, tiny: tuple[Path, Path], tmp_path: Path) -> None:
    data, weights = tiny
    options = PretrainOptions(image_size=64, epochs=1, batch_size=8, views=2)
    result = pretrain(
        data, tmp_path / method, method=method, config=_config(weights), options=options,  # type: ignore[arg-type]
        progress=False,
    )  # fmt: skip
    assert result.backbone.weights_sha256 != result.base.weights_sha256
    assert json.loads((tmp_path / method / "backbone.json").read_text())["method"] == method


def test_folder_names_are_paths_not_registry_names(tmp_path: Path) -> None:
    assert not is_folder_name("mobilenet_v2") and not is_folder_name("timm:resnet18")
    assert not is_folder_name("hf:sentence-transformers/all-MiniLM-L6-v2")
    assert not is_folder_name("mobilenet_v2+efficientnet_lite0")
    assert is_folder_name("./adapted") and is_folder_name(str(tmp_path))


def _one_line_error(capsys: pytest.CaptureFixture[str], args: list[str], *words: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err


def test_bad_input_is_one_line(
    adapted: Path, tiny: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, weights = tiny
    base = ["-b", TINY, "--weights", str(weights), *SMALL]
    out = str(tmp_path / "out")
    _one_line_error(capsys, ["pretrain", str(tmp_path / "nope"), "-o", out, *base], "nope")
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("no images here")
    _one_line_error(capsys, ["pretrain", str(tmp_path / "empty"), "-o", out, *base], "0 image")
    args = ["pretrain", str(data), "-o", out, "--method", "moco", *base]
    _one_line_error(capsys, args, "moco", "simclr, byol, dino")
    _one_line_error(capsys, ["pretrain", str(data), "-o", str(adapted), *base], "--overwrite")
    _one_line_error(capsys, ["pretrain", "--resume", str(adapted)], "already finished")
    # a backbone folder that is not one, or is damaged
    fit = ["fit", str(data), "-o", str(tmp_path / "run"), "-q", "--no-report"]
    (tmp_path / "plain").mkdir()
    _one_line_error(capsys, [*fit, "-b", str(tmp_path / "plain")], "not a backbone folder")
    _one_line_error(capsys, [*fit, "-b", str(tmp_path / "missing")], "backbone folder not found")
    _one_line_error(capsys, [*fit, "-b", str(adapted), "--weights", str(weights)], "--weights")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("backbone.json", "backbone.safetensors"):
        (damaged / name).write_bytes((adapted / name).read_bytes())
    blob = bytearray((damaged / "backbone.safetensors").read_bytes())
    blob[-1] ^= 0xFF
    (damaged / "backbone.safetensors").write_bytes(bytes(blob))
    with pytest.raises(WeightsError, match="damaged"):
        resolve_backbone(str(damaged))
    _one_line_error(capsys, [*fit, "-b", str(damaged)], "damaged")
    (damaged / "backbone.json").write_text("{not json")
    with pytest.raises(BackboneError, match="cannot read"):
        resolve_backbone(str(damaged))


def test_missing_lightly_says_how_to_install(
    tiny: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "lightly" else real(name, *a)
    )
    _one_line_error(capsys, ["pretrain", str(tiny[0]), "-o", str(tmp_path / "o")], "pip install")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "headstart.cli.main", *args]


@pytest.mark.slow
def test_kill_and_resume_matches_uninterrupted_run(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    """kill -9 after the first epoch's checkpoint, then --resume: the same weights."""
    data, weights = tiny
    args = [
        "-b",
        TINY,
        "--weights",
        str(weights),
        "--epochs",
        "4",
        "--set",
        "train.accelerator=cpu",
    ]
    args += list(SMALL)
    assert main(["pretrain", str(data), "-o", str(tmp_path / "whole"), *args]) == 0
    killed = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    kill_after_checkpoint(_cli("pretrain", str(data), "-o", str(killed), *args), killed, env)
    assert not (killed / "backbone.json").exists()
    assert main(["pretrain", "--resume", str(killed), "-q"]) == 0
    whole = load_file(str(tmp_path / "whole" / "backbone.safetensors"))
    resumed = load_file(str(killed / "backbone.safetensors"))
    for key, value in whole.items():
        assert torch.allclose(value.float(), resumed[key].float(), atol=1e-5), key
    rows = (killed / "logs" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "1", "2", "3"]


@pytest.mark.slow
def test_two_process_ddp_on_cpu_writes_a_folder_fit_accepts(
    tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    """``--devices 2 --strategy ddp``: two processes share the images (SimCLR's negatives are
    gathered across them) and rank 0 writes the folder, which ``fit -b`` then takes."""
    import subprocess

    data, weights = tiny
    out = tmp_path / "ddp"
    args = ["-b", TINY, "--weights", str(weights), "--epochs", "2", "--devices", "2"]
    args += ["--strategy", "ddp", "--set", "train.accelerator=cpu", *SMALL]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        _cli("pretrain", str(data), "-o", str(out), *args),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((out / "backbone.json").read_text())
    assert record["base"] == TINY
    config = load_config(overrides=[f"backbone.name={out}", "eval.n_boot=0"])
    result = headstart.fit(data, tmp_path / "run", config=config, progress=False, report=False)
    assert result.backbone.weights_sha256 == record["weights_sha256"]
    assert record["weights_sha256"] != resolve_backbone(TINY, weights).weights_sha256
