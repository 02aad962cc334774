"""Extraction on real photos: ONNX vs torch parity, caching, failures, no torch on cache hits."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from headstart.backbones import BackboneRef, resolve_backbone
from headstart.backbones.spec import file_sha256
from headstart.errors import ConfigError
from headstart.features import EmbeddingStore, extract, model_key

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "src" / "headstart" / "demo_data" / "train"


@pytest.fixture(scope="module")
def photos() -> list[Path]:
    """Eight real clothing photos, two per class from four classes."""
    paths = []
    for folder in sorted(DEMO.iterdir())[:4]:
        paths += sorted(folder.glob("*.jpg"))[:2]
    assert len(paths) == 8
    return paths


@pytest.fixture(scope="module")
def ref() -> BackboneRef:
    return resolve_backbone("mobilenet_v2")


@pytest.fixture(scope="module")
def onnx_run(
    tmp_path_factory: pytest.TempPathFactory, photos: list[Path], ref: BackboneRef
) -> tuple[EmbeddingStore, np.ndarray]:
    """One cold ONNX extraction (exports the model once for this module)."""
    store = EmbeddingStore(tmp_path_factory.mktemp("store"))
    result = extract(photos, None, ref, store=store, engine="onnx", batch_size=3, progress=False)
    assert result.engine == "onnx" and result.n_computed == 8 and result.n_cached == 0
    assert result.features.shape == (8, 1280) and not result.failures
    assert store.onnx_path(model_key(ref, "onnx")).is_file()
    return store, result.features


def _fresh_store(tmp_path: Path, warm: EmbeddingStore) -> EmbeddingStore:
    """An empty embedding cache that reuses the module's ONNX export."""
    shutil.copytree(warm.root / "onnx", tmp_path / "store" / "onnx")
    return EmbeddingStore(tmp_path / "store")


def test_onnx_matches_torch_and_torchvision(
    onnx_run: tuple[EmbeddingStore, np.ndarray],
    photos: list[Path],
    ref: BackboneRef,
    tmp_path: Path,
) -> None:
    import torch
    import torchvision
    from PIL import Image
    from torchvision.models import MobileNet_V2_Weights

    _, onnx_features = onnx_run
    eager = extract(
        photos, None, ref, store=EmbeddingStore(tmp_path), engine="torch", progress=False
    )
    assert eager.engine == "torch" and eager.n_computed == 8
    diff = np.abs(onnx_features - eager.features).max()
    assert diff < 1e-3 * np.abs(eager.features).max(), diff
    # The hand-written torchvision pipeline gives the same numbers.
    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(ref.weights_path, weights_only=True))
    model.eval()
    transform = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    x = torch.stack([transform(Image.open(p).convert("RGB")) for p in photos])
    with torch.no_grad():
        plain = torch.nn.functional.adaptive_avg_pool2d(model.features(x), 1).flatten(1).numpy()
    assert np.abs(plain - eager.features).max() < 1e-4


def test_second_run_is_cached_and_builds_nothing(
    onnx_run: tuple[EmbeddingStore, np.ndarray],
    photos: list[Path],
    ref: BackboneRef,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, first = onnx_run

    def no_build(self: BackboneRef) -> None:
        raise AssertionError("the model must not be built on a cache hit")

    monkeypatch.setattr(BackboneRef, "build", no_build)
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in photos]
    again = extract(photos, shas, ref, store=store, engine="onnx", progress=False)
    assert (again.n_cached, again.n_computed) == (8, 0)
    assert np.array_equal(again.features, first)


def test_damaged_entry_is_recomputed(
    onnx_run: tuple[EmbeddingStore, np.ndarray],
    photos: list[Path],
    ref: BackboneRef,
    tmp_path: Path,
) -> None:
    warm, first = onnx_run
    store = _fresh_store(tmp_path, warm)
    extract(photos, None, ref, store=store, engine="onnx", progress=False)
    vector = store.get_many(model_key(ref, "onnx"), [file_sha256(photos[0])])[0]
    assert vector is not None
    entry = next((store.root / "tables").rglob("*.arrow"))
    data = entry.read_bytes()
    at = data.index(vector[:4].tobytes())  # inside the first photo's vector
    entry.write_bytes(data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :])
    again = extract(photos, None, ref, store=store, engine="onnx", progress=False)
    assert (again.n_cached, again.n_computed) == (7, 1)
    assert np.allclose(again.features, first, atol=1e-5)


def test_bad_files_become_failure_rows(
    onnx_run: tuple[EmbeddingStore, np.ndarray],
    photos: list[Path],
    ref: BackboneRef,
    tmp_path: Path,
) -> None:
    warm, first = onnx_run
    store = _fresh_store(tmp_path, warm)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(photos[0].read_bytes()[:2000])
    paths = [photos[0], garbage, *photos[1:4], truncated]
    result = extract(paths, None, ref, store=store, engine="onnx", progress=False)
    assert sorted(result.failures) == [1, 5]
    assert np.isnan(result.features[[1, 5]]).all()
    assert np.allclose(result.features[[0, 2, 3, 4]], first[:4], atol=1e-5)
    # The decode failures are cached: the next run decodes nothing.
    again = extract(paths, None, ref, store=store, engine="onnx", progress=False)
    assert again.n_computed == 0 and again.failures == result.failures


def test_cached_onnx_and_cache_hits_need_no_torch(
    onnx_run: tuple[EmbeddingStore, np.ndarray], photos: list[Path], tmp_path: Path
) -> None:
    warm, _ = onnx_run
    store = _fresh_store(tmp_path, warm)
    code = """
import json, sys
from pathlib import Path
from headstart.backbones import resolve_backbone
from headstart.features import EmbeddingStore, extract
paths = [Path(p) for p in json.loads(sys.argv[1])]
store = EmbeddingStore(Path(sys.argv[2]))
ref = resolve_backbone("mobilenet_v2")
runs = [extract(paths, None, ref, store=store, engine="onnx", progress=False) for _ in range(2)]
print(json.dumps([[r.n_computed for r in runs], "torch" in sys.modules]))
"""
    args = [json.dumps([str(p) for p in photos]), str(store.root)]
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[8, 0], False]


def test_bad_arguments(photos: list[Path], ref: BackboneRef, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown engine 'tpu'"):
        extract(photos, None, ref, store=EmbeddingStore(tmp_path), engine="tpu")
    with pytest.raises(ConfigError, match="sha256"):
        extract(photos, ["0" * 64], ref, store=EmbeddingStore(tmp_path), progress=False)
