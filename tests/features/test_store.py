"""The embedding store: round trip, damage detection, atomic writes, keys and read speed."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import pytest

from headstart.backbones import Preprocessing, resolve_backbone
from headstart.cache import default_cache_root
from headstart.features import EmbeddingStore, model_key

SHA = "ab" * 32


def _entry(store: EmbeddingStore, key: str, sha: str = SHA) -> Path:
    return store.root / "embeddings" / key / sha[:2] / f"{sha}.emb"


def test_put_get_round_trip(cache_dir: Path) -> None:
    store = EmbeddingStore(cache_dir)
    vec = np.random.default_rng(0).normal(size=1280).astype(np.float32)
    assert store.get("k", SHA) is None
    store.put("k", SHA, vec)
    got = store.get("k", SHA)
    assert got is not None and got.dtype == np.float32 and np.array_equal(got, vec)
    assert store.get("other", SHA) is None
    assert [v is None for v in store.get_many("k", [SHA, "cd" * 32])] == [False, True]


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "garbage"])
def test_damaged_entry_reads_as_missing_and_is_removed(tmp_path: Path, damage: str) -> None:
    store = EmbeddingStore(tmp_path)
    store.put("k", SHA, np.arange(16, dtype=np.float32))
    path = _entry(store, "k")
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-5]
    elif damage == "flip":
        data[-3] ^= 0x10
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"not an entry at all")
    path.write_bytes(bytes(data))
    assert store.get("k", SHA) is None
    assert not path.exists()


def test_failures_are_remembered(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    assert store.get_failure("k", SHA) is None
    store.put_failure("k", SHA, "truncated or corrupt image data")
    assert store.get_failure("k", SHA) == "truncated or corrupt image data"
    assert store.get("k", SHA) is None
    fail = _entry(store, "k").with_suffix(".fail")
    fail.write_bytes(b"{broken")
    assert store.get_failure("k", SHA) is None and not fail.exists()


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = EmbeddingStore(tmp_path)
    old = np.ones(8, np.float32)
    store.put("k", SHA, old)

    def crash(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.put("k", SHA, np.zeros(8, np.float32))
    monkeypatch.undo()
    got = store.get("k", SHA)
    assert got is not None and np.array_equal(got, old)
    assert [p.name for p in _entry(store, "k").parent.iterdir()] == [f"{SHA}.emb"]


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HEADSTART_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_root() == tmp_path / "headstart"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_root() == Path.home() / ".cache" / "headstart"


def test_model_key_changes_with_what_changes_the_numbers() -> None:
    ref = resolve_backbone("mobilenet_v2")
    key = model_key(ref, "onnx")
    assert key == model_key(resolve_backbone("mobilenet_v2"), "onnx")
    other_prep = Preprocessing(288, 256, ref.preprocessing.mean, ref.preprocessing.std)
    variants = [
        model_key(ref, "torch"),
        model_key(dataclasses.replace(ref, weights_sha256="0" * 64), "onnx"),
        model_key(dataclasses.replace(ref, preprocessing=other_prep), "onnx"),
        model_key(dataclasses.replace(ref, name="efficientnet_lite0"), "onnx"),
    ]
    assert key not in variants and len(set(variants)) == len(variants)


def test_reading_4000_entries_is_fast(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    rng = np.random.default_rng(1)
    shas = [f"{i:064x}" for i in range(4000)]
    for sha in shas:
        store.put("k", sha, rng.normal(size=1280).astype(np.float32))
    start = time.perf_counter()
    got = store.get_many("k", shas)
    elapsed = time.perf_counter() - start
    assert all(v is not None and v.shape == (1280,) for v in got)
    assert elapsed < 1.0, f"reading 4000 entries took {elapsed:.2f} s"
