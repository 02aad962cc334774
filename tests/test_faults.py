"""The fault suite: damaged caches, hostile bundles, full and read-only disks, fits that race
for one output folder.  Each test names the behaviour it protects; the scan's faults are in
tests/data/test_scan_faults.py, the service's in tests/serve, the checkpoints' in
tests/finetune."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import headstart
from conftest import fit_run
from headstart.cache import CacheRoot
from headstart.cli.main import main
from headstart.features import model_key
from headstart.fsutil import entry_digest, file_digest
from headstart.result import FitResult
from headstart.runfolder import RunFolder

_SETTINGS = ["--set", "eval.n_boot=200", "-q", "--no-report"]


def _flip_bit(path: Path, at: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0x10
    path.write_bytes(bytes(data))


def _one_line_error(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and all(n in err for n in needles), err
    return err


# -- every cache entry is verified on read ----------------------------------------------------
def _entries(cache: Path) -> dict[str, Path]:
    """One entry of each cache kind a fit with its report writes."""
    found = {
        "embedding": next(cache.glob("tables/*/data/*.arrow")),
        "onnx backbone": next(cache.glob("onnx/*.onnx")),
        "weights": next(cache.glob("weights/*.safetensors")),
        "head": next(cache.glob("heads/*/head.safetensors")),  # its record: tests/heads
        "overlay": next(cache.glob("report-overlays/*.txt")),
        "map points": next(cache.glob("report-overlays/map-*.npz")),
    }
    pairs = list(cache.glob("pixel-similarity/**/*-*"))
    if pairs:
        found["pixel pair"] = next(p for p in pairs if not p.name.endswith(".sha256"))
    return found


def test_a_flipped_bit_in_any_cache_entry_is_caught_reported_and_recomputed(
    tiny_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One flipped bit in an embedding, an ONNX backbone, the converted weights, a head, its
    record, a report overlay or the map's points: the next fit reports that entry once,
    removes it, computes it again, and scores exactly as before."""
    cache = tmp_path / "cache"  # its own: every entry in it is one this fit uses
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for photo in sorted((data / "test" / "hat").glob("*.jpg"))[:2]:  # errors for the gallery
        photo.rename(data / "test" / "shoes" / photo.name)
    first = fit_run(data, tmp_path / "first", cache)
    assert isinstance(first, FitResult)
    entries = _entries(cache)
    for path in entries.values():
        _flip_bit(path)
    with caplog.at_level(logging.WARNING, logger="headstart"):
        second = fit_run(data, tmp_path / "second", cache)
    assert isinstance(second, FitResult)
    reports = [r.getMessage() for r in caplog.records if "cache entry" in r.getMessage()]
    for kind, path in entries.items():
        entry = path.parent if kind == "head" else path  # a head entry is a folder
        said = [m for m in reports if str(entry) in m]
        assert len(said) == 1, (kind, reports)
        assert path.is_file(), f"{kind} was not computed again"
        if kind not in ("embedding", "head"):  # their digests are inside the entry
            assert entry_digest(path) == file_digest(path), kind
    for split, per_task in first.metrics.items():
        for task, metrics in per_task.items():
            assert second.metrics[split][task].accuracy == metrics.accuracy  # type: ignore[union-attr]
    np.testing.assert_array_equal(
        first.probabilities["test"]["label"], second.probabilities["test"]["label"]
    )


# -- bundles and the cache ---------------------------------------------------------------------
def test_a_bundle_owns_its_weights_file(plain_run: FitResult) -> None:
    """No hard link into the cache: editing a bundle's weights in place cannot edit the cache
    that later fits copy from."""
    weights = plain_run.bundle_dir / "backbone.safetensors"
    cached = CacheRoot.for_config(plain_run.config).weights(plain_run.backbone.weights_sha256)
    assert weights.stat().st_nlink == 1
    assert not os.path.samefile(weights, cached)


def test_a_bundle_with_other_weights_keys_caches_by_the_bytes_it_loads(
    plain_run: FitResult, tiny_data: Path, tmp_path: Path
) -> None:
    """A bundle whose weights file differs from the weights hash it records (digest updated so
    it loads) gets cache keys from its own file: its embeddings and ONNX export land under
    their own key, never under the genuine backbone's.  A genuine bundle keeps the key its
    fit used, so its predictions come from the fit's cache."""
    cache = CacheRoot(tmp_path / "cache")
    shutil.copytree(CacheRoot.for_config(plain_run.config).path, cache.path)
    genuine = headstart.load(plain_run.bundle_dir, cache=cache)
    assert model_key(genuine.backbone_ref, "onnx") == model_key(plain_run.backbone, "onnx")
    genuine_onnx = cache.store.onnx_path(model_key(plain_run.backbone, "onnx"))
    before = file_digest(genuine_onnx)

    bundle = tmp_path / "tampered"
    shutil.copytree(plain_run.bundle_dir, bundle)
    weights = bundle / "backbone.safetensors"
    arrays = load_file(str(weights))
    name = next(k for k, v in arrays.items() if v.dtype == np.float32 and v.ndim == 4)
    arrays[name] = arrays[name] * 1.5
    save_file(arrays, str(weights))
    info = json.loads((bundle / "model.json").read_text())
    info["files"]["backbone.safetensors"] = file_digest(weights)
    (bundle / "model.json").write_text(json.dumps(info))

    tampered = headstart.load(bundle, cache=cache)
    assert tampered.backbone_ref.weights_sha256 == file_digest(weights)
    photos = sorted((tiny_data / "test").rglob("*.jpg"))[:3]
    tampered.predict_proba(photos)
    assert file_digest(genuine_onnx) == before
    assert cache.store.onnx_path(model_key(tampered.backbone_ref, "onnx")).is_file()
    np.testing.assert_allclose(
        genuine.predict_proba(photos)[0], plain_run.model.predict_proba(photos)[0], atol=1e-6
    )


# -- disk faults -------------------------------------------------------------------------------
@pytest.fixture()
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """Mount a small tmpfs (``options`` as for mount -o); skips where mounting is not allowed
    (it needs root and the right to mount, as CI has)."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _fit_args(data: Path, out: Path, cache: Path) -> list[str]:
    return ["fit", str(data), "-o", str(out), "--set", f"extract.cache_dir={cache}", *_SETTINGS]


def test_a_full_output_disk_is_one_line_and_leaves_no_half_run(
    tiny_data: Path,
    shared_cache: Path,
    tmpfs: Callable[[str, str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """3 MB of space: the bundle's weights do not fit.  One line naming the path and the
    cause, exit 2, and no metrics, predictions or model left to be taken for a finished run."""
    out = tmpfs("full", "size=3m") / "run"
    assert main(_fit_args(tiny_data, out, shared_cache)) == 2
    _one_line_error(capsys, "No space left on device", str(out))
    assert sorted(p.name for p in out.iterdir()) == [".lock"]


def test_a_full_cache_disk_is_one_line(
    tiny_data: Path,
    tmp_path: Path,
    tmpfs: Callable[[str, str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    cache = tmpfs("cache", "size=1m")
    assert main(_fit_args(tiny_data, tmp_path / "run", cache)) == 2
    _one_line_error(capsys, "No space left on device", str(cache))
    assert not (tmp_path / "run" / "model").exists()


def test_a_read_only_output_is_one_line(
    tiny_data: Path,
    shared_cache: Path,
    tmpfs: Callable[[str, str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmpfs("ro", "ro,size=1m") / "run"
    assert main(_fit_args(tiny_data, out, shared_cache)) == 2
    _one_line_error(capsys, "Read-only file system", str(out))


def test_a_second_fit_into_a_folder_being_written_is_refused(
    tiny_data: Path, shared_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The "already holds a model" guard holds under concurrency: a fit holds its output
    folder's lock from the check to the last file, and a second fit into it stops at once."""
    out = tmp_path / "run"
    with RunFolder(out).lock():
        assert main(_fit_args(tiny_data, out, shared_cache)) == 2
    _one_line_error(capsys, "being written by another fit")
    assert main(_fit_args(tiny_data, out, shared_cache)) == 0  # the lock went with its holder


def test_an_output_inside_the_data_is_refused(
    tiny_data: Path, shared_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    assert main(_fit_args(data, data / "runs" / "a", shared_cache)) == 2
    _one_line_error(capsys, "inside the data folder")
    assert not (data / "runs").exists()
