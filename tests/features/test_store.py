"""The embedding store: one columnar table per model key.

Round trip, a damaged row or fragment or manifest reads as missing and is reported once,
concurrent writers lose nothing, a crashed commit leaves the table as it was, compaction keeps
every latest row, the old per-file cache is migrated once, keys, and read speed."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from headstart.backbones import Preprocessing, resolve_backbone
from headstart.cache import default_cache_root
from headstart.features import EmbeddingStore, model_key
from headstart.features import store as store_module
from headstart.features import table as table_module

SHA = "ab" * 32


def _fresh(store: EmbeddingStore) -> EmbeddingStore:
    """The same cache as a new process would see it (no table kept open)."""
    store_module._TABLES.clear()
    return EmbeddingStore(store.root)


def _fragments(store: EmbeddingStore, key: str) -> list[Path]:
    return sorted((store.root / "tables" / key / "data").glob("*.arrow"))


def _vectors(n: int, dim: int = 64, seed: int = 0) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    return [f"{seed:08x}{i:056x}" for i in range(n)], rng.normal(size=(n, dim)).astype(np.float32)


def test_put_get_round_trip(cache_dir: Path) -> None:
    store = EmbeddingStore(cache_dir)
    vec = np.random.default_rng(0).normal(size=1280).astype(np.float32)
    assert store.get("k", SHA) is None
    store.put("k", SHA, vec)
    got = store.get("k", SHA)
    assert got is not None and got.dtype == np.float32 and np.array_equal(got, vec)
    assert store.get("other", SHA) is None
    assert [v is None for v in store.get_many("k", [SHA, "cd" * 32])] == [False, True]


def test_shas_and_digests_with_zero_bytes_round_trip(tmp_path: Path) -> None:
    """numpy drops trailing zero bytes of fixed-size bytes values: shas ending in 00 (one in
    256 files) must still be found and checked."""
    shas = ["00" * 32, "ab" * 31 + "00", "00" * 31 + "01"]
    vectors = np.arange(3 * 8, dtype=np.float32).reshape(3, 8)
    store = EmbeddingStore(tmp_path)
    store.put_many("k", shas, vectors)
    for fresh in (store, _fresh(store)):
        got = fresh.get_many("k", shas)
        assert all(
            g is not None and np.array_equal(g, v) for g, v in zip(got, vectors, strict=True)
        )


def test_writer_commits_in_batches_and_on_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(store_module, "COMMIT_ROWS", 10)
    store = EmbeddingStore(tmp_path)
    shas, vectors = _vectors(25)
    with pytest.raises(RuntimeError), store.writer("k") as writer:
        writer.add_many(shas, vectors)
        raise RuntimeError("the run stops")
    assert len(_fragments(store, "k")) == 3  # 10 + 10 + the 5 flushed on the way out
    got = _fresh(store).get_many("k", shas)
    assert all(np.array_equal(g, v) for g, v in zip(got, vectors, strict=True))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_damaged_fragment_reads_as_missing_and_is_reported(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = EmbeddingStore(tmp_path)
    shas, vectors = _vectors(4, dim=16)
    store.put_many("k", shas[:2], vectors[:2])
    store.put_many("k", shas[2:], vectors[2:])
    path = _fragments(_fresh(store), "k")[0]
    store_module._TABLES.clear()
    data = bytearray(path.read_bytes())
    if damage == "flip":  # one vector's bytes: that row only
        inside = next(v.tobytes() for v in vectors if v.tobytes() in data)
        data[data.index(inside) + 5] ^= 0x10
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not an arrow file")
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="headstart"):
        got = EmbeddingStore(tmp_path).get_many("k", shas)
        EmbeddingStore(tmp_path).get_many("k", shas)  # reported once, not per read
    found = [g is not None for g in got]
    if damage == "flip":
        assert found.count(False) == 1
    else:
        assert found.count(False) == 2  # the whole fragment: its two rows
    for g, v, ok in zip(got, vectors, found, strict=True):
        assert not ok or np.array_equal(g, v)
    reports = [r.getMessage() for r in caplog.records if "cache" in r.getMessage()]
    assert len(reports) == 1 and str(path) in reports[0], reports
    # computed again: the new row wins over the damaged one, with no further report
    missing = [s for s, ok in zip(shas, found, strict=True) if not ok]
    store.put_many(
        "k", missing, np.stack([v for v, ok in zip(vectors, found, strict=True) if not ok])
    )
    again = _fresh(store).get_many("k", shas)
    assert all(np.array_equal(g, v) for g, v in zip(again, vectors, strict=True))


def test_damaged_manifest_falls_back_to_the_previous_version(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    shas, vectors = _vectors(2)
    store.put_many("k", shas[:1], vectors[:1])
    store.put_many("k", shas[1:], vectors[1:])
    versions = sorted((tmp_path / "tables" / "k" / "versions").glob("*.json"))
    versions[-1].write_text(versions[-1].read_text().replace('"rows": 1', '"rows": 9'))
    got = _fresh(store).get_many("k", shas)
    assert got[0] is not None and got[1] is None


def test_failures_are_remembered(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    assert store.get_failure("k", SHA) is None
    store.put_failure("k", SHA, "truncated or corrupt image data")
    assert store.get_failure("k", SHA) == "truncated or corrupt image data"
    assert _fresh(store).get_failure("k", SHA) == "truncated or corrupt image data"
    assert store.get("k", SHA) is None


def test_a_crashed_commit_leaves_the_table_as_it_was(tmp_path: Path, monkeypatch) -> None:
    store = EmbeddingStore(tmp_path)
    shas, vectors = _vectors(2)
    store.put("k", shas[0], vectors[0])

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", crash)  # the fragment is written, the manifest is not
    with pytest.raises(OSError):
        store.put("k", shas[1], vectors[1])
    monkeypatch.undo()
    fresh = _fresh(store)
    assert np.array_equal(fresh.get("k", shas[0]), vectors[0])
    assert fresh.get("k", shas[1]) is None
    folder = tmp_path / "tables" / "k"
    assert not [p for p in folder.rglob(".tmp.*")]


_WRITER = """
import sys
from pathlib import Path
import numpy as np
from headstart.features import EmbeddingStore
seed = int(sys.argv[2])
rng = np.random.default_rng(seed)
shas = [f"{seed:08x}{i:056x}" for i in range(200)]
vectors = rng.normal(size=(200, 64)).astype(np.float32)
store = EmbeddingStore(Path(sys.argv[1]))
for start in range(0, 200, 10):
    store.put_many("k", shas[start : start + 10], vectors[start : start + 10])
"""


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Two processes, 20 commits each at the same time (with compactions among them)."""
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path), str(seed)])
        for seed in (1, 2)
    ]
    assert [w.wait(120) for w in writers] == [0, 0]
    store = _fresh(EmbeddingStore(tmp_path))
    for seed in (1, 2):
        shas, vectors = _vectors(200, seed=seed)
        got = store.get_many("k", shas)
        assert all(
            g is not None and np.array_equal(g, v) for g, v in zip(got, vectors, strict=True)
        )
    assert len(store.table("k")) == 400


def test_compaction_merges_fragments_and_keeps_the_latest_rows(tmp_path: Path) -> None:
    store = EmbeddingStore(tmp_path)
    shas, vectors = _vectors(4 * table_module.MERGE_FANOUT + 5)
    for sha, vec in zip(shas, vectors, strict=True):
        store.put("k", sha, vec)
    store.put("k", shas[0], vectors[1])  # rewritten: the newer row wins
    assert len(_fragments(store, "k")) < 10
    fresh = _fresh(store)
    assert np.array_equal(fresh.get("k", shas[0]), vectors[1])
    got = fresh.get_many("k", shas[1:])
    assert all(np.array_equal(g, v) for g, v in zip(got, vectors[1:], strict=True))
    assert len(fresh.table("k")) == len(shas)


def _old_entry(root: Path, key: str, sha: str, payload: bytes, suffix: str = ".emb") -> Path:
    path = root / "embeddings" / key / sha[:2] / f"{sha}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = store_module._digest(payload)
    path.write_bytes(struct.pack("<4sI16s", b"HSE1", (len(payload) + 3) // 4, digest) + payload)
    return path


def test_the_old_per_file_cache_is_migrated_once(tmp_path: Path) -> None:
    shas, vectors = _vectors(3, dim=8)
    for sha, vec in zip(shas[:2], vectors[:2], strict=True):
        _old_entry(tmp_path, "k", sha, vec.astype("<f4").tobytes())
    damaged = _old_entry(tmp_path, "k", shas[2], vectors[2].astype("<f4").tobytes())
    damaged.write_bytes(damaged.read_bytes()[:-3])
    _old_entry(tmp_path, "k", "cd" * 32, json.dumps({"reason": "not an image"}).encode(), ".fail")
    store = _fresh(EmbeddingStore(tmp_path))
    got = store.get_many("k", shas)
    assert np.array_equal(got[0], vectors[0]) and np.array_equal(got[1], vectors[1])
    assert got[2] is None  # damaged in the old cache: computed again, as before
    assert store.get_failure("k", "cd" * 32) == "not an image"
    assert not (tmp_path / "embeddings" / "k").exists()
    assert len(_fresh(store).table("k")) == 2


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
    """A guard against a per-row open or copy sneaking in, not a benchmark (see
    benchmarks/store_backends.py): 4000 rows of 1280 floats in well under a second."""
    store = EmbeddingStore(tmp_path)
    shas, vectors = _vectors(4000, dim=1280)
    store.put_many("k", shas, vectors)
    store = _fresh(store)
    start = time.perf_counter()
    got = store.get_many("k", shas)
    elapsed = time.perf_counter() - start
    assert all(v is not None and v.shape == (1280,) for v in got)
    assert elapsed < 1.0, f"reading 4000 entries took {elapsed:.2f} s"


def test_nearest_is_exact_among_a_subset_or_the_whole_table(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(table_module, "_SEARCH_BLOCK", 70)  # several blocks and fragments
    store = EmbeddingStore(tmp_path)
    shas, vectors = _vectors(300, dim=32)
    store.put_many("k", shas[:150], vectors[:150])
    store.put_many("k", shas[150:], vectors[150:])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[[3, 200]] + 0.01
    for among in (None, shas[100:250]):
        found, distances = _fresh(store).nearest("k", queries, 5, among=among)
        lo, hi = (0, 300) if among is None else (100, 250)
        sims = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit[lo:hi].T
        exact = np.argsort(-sims, axis=1)[:, :5] + lo
        assert found == [[shas[j] for j in row] for row in exact]
        np.testing.assert_allclose(distances, 1 - np.sort(sims, axis=1)[:, ::-1][:, :5], atol=1e-5)


def test_merging_keeps_each_shas_latest_row_across_tiers(tmp_path: Path, monkeypatch) -> None:
    """A sha rewritten in a later, small fragment keeps its newest vector through merges of
    fragments that are not neighbours in commit order."""
    monkeypatch.setattr(table_module, "_TIER_BASE", 2)  # tiers at 16, 128, ... rows
    store = EmbeddingStore(tmp_path)
    shas, vectors = _vectors(40, dim=4)
    store.put_many("k", shas[:20], vectors[:20])  # one tier-1 fragment
    newest = {}
    for i in range(3 * table_module.MERGE_FANOUT):
        sha = shas[i % 20]
        newest[sha] = vectors[20 + i % 20] + i
        store.put("k", sha, newest[sha])
    fresh = _fresh(store)
    for sha in shas[:20]:
        assert np.array_equal(fresh.get("k", sha), newest.get(sha, vectors[shas.index(sha)]))
    assert len(_fragments(fresh, "k")) <= 2 * table_module.MERGE_FANOUT


def test_a_damaged_row_stays_detectable_through_a_merge(tmp_path: Path, monkeypatch) -> None:
    """Merging copies each row with the check it was written with: damage is not laundered
    into a row that would read as intact."""
    store = EmbeddingStore(tmp_path)
    shas, vectors = _vectors(table_module.MERGE_FANOUT, dim=8)
    store.put("k", shas[0], vectors[0])
    path = _fragments(store, "k")[0]
    data = bytearray(path.read_bytes())
    data[data.index(vectors[0].tobytes()) + 2] ^= 0x10
    store_module._TABLES.clear()
    path.write_bytes(bytes(data))
    for sha, vec in zip(shas[1:], vectors[1:], strict=True):  # the eighth commit merges
        EmbeddingStore(tmp_path).put("k", sha, vec)
    fresh = _fresh(store)
    assert len(_fragments(fresh, "k")) == 1
    assert fresh.get("k", shas[0]) is None
    assert all(
        np.array_equal(fresh.get("k", s), v) for s, v in zip(shas[1:], vectors[1:], strict=True)
    )
