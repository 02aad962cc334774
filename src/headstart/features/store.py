"""The embedding cache: one columnar table per model key (:mod:`headstart.features.table`).

``EmbeddingStore(root)`` keeps ``root/tables/<model key>/`` (vectors and remembered decode
failures, each row checked on read) and ``root/onnx/`` (the backbones exported to ONNX).
Writes go through :meth:`EmbeddingStore.writer`, which commits every few thousand rows (and at
the end), so a killed run keeps what it had committed.

Releases before the table kept one small file per (model key, image sha256) under
``root/embeddings/``: an entry ``magic | length | blake2b digest | float32 payload``, and
``.fail`` records.  Such a folder is migrated into the table the first time its key is read
(once, with a progress bar when it is large), then removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from headstart.features.neighbours import EXACT_BELOW, cross_group_pairs, knn
from headstart.features.table import VectorTable

if TYPE_CHECKING:
    from headstart.backbones.registry import BackboneRef

__all__ = ["STORE_FORMAT", "EmbeddingStore", "StoreWriter", "model_key", "model_keys"]

STORE_FORMAT = 1
_MAGIC = b"HSE1"
_HEADER = struct.Struct("<4sI16s")  # magic, number of float32 values, digest of the payload
#: Rows a writer buffers before committing them (and the most a kill can lose).
COMMIT_ROWS = 2048
#: Seconds after which a writer commits what it has, however few rows.
COMMIT_SECONDS = 20.0
#: Old-format entries above which the migration shows a progress bar.
_MIGRATION_BAR = 500
_log = logging.getLogger("headstart")


def model_key(ref: BackboneRef, engine: str) -> str:
    """A short hash of everything that changes the numbers: backbone, weights, preprocessing,
    the decode rule (JPEG draft at the resize size), the engine and the store format, and the
    int8 model's digest when the ref has one (so int8 embeddings never meet float32 ones; a
    float32 ref's key is what it always was).  A text encoder's tokenizer, length, pooling and
    normalisation (``ref.text.key()``) stand in for the image preprocessing and decode rule."""
    parts: dict[str, object] = {
        "name": ref.name,
        "weights_sha256": ref.weights_sha256,
        "engine": engine,
        "format": STORE_FORMAT,
    }
    if ref.text is not None:
        parts["text"] = ref.text.key()
    else:
        parts["preprocessing"] = ref.preprocessing.key()
        parts["decode"] = f"load_rgb(draft_size={ref.preprocessing.resize})"
    if ref.int8_sha256:
        parts["int8_sha256"] = ref.int8_sha256
    text = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def model_keys(ref: BackboneRef, engine: str) -> tuple[str, ...]:
    """The tables a backbone's embeddings live in: one per part of a fusion, else one."""
    parts = ref.parts if ref.is_fused else (ref,)
    return tuple(model_key(part, engine) for part in parts)


def _digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


def _seal(payload: bytes) -> bytes:
    """An entry: header (magic, length in float32 units, digest) then ``payload``."""
    return _HEADER.pack(_MAGIC, (len(payload) + 3) // 4, _digest(payload)) + payload


def _unseal(data: bytes) -> bytes | None:
    """An entry's payload when its header, length and digest all check out, else None."""
    if len(data) < _HEADER.size:
        return None
    magic, n, digest = _HEADER.unpack_from(data)
    payload = data[_HEADER.size :]
    ok = magic == _MAGIC and (len(payload) + 3) // 4 == n and _digest(payload) == digest
    return payload if ok else None


def _write_atomic(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp.", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:  # name the entry: a full cache disk is one line naming it
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, path) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_old_entry(path: Path) -> bytes | None:
    """An old-format entry's payload when it checks out, else None."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return _unseal(data)


_TABLES: dict[Path, VectorTable] = {}
_TABLES_LOCK = threading.Lock()


class EmbeddingStore:
    """Cached feature vectors keyed by (model key, file sha256), one table per key under
    ``root/tables``, and the ONNX exports of the backbones under ``root/onnx``; see
    :func:`model_key`.  The root comes from :class:`headstart.cache.CacheRoot`, which owns every
    cache.  Opened tables are shared by every store on the same root in a process."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.root)!r})"

    def table(self, key: str) -> VectorTable:
        """The table of ``key`` (an old per-file folder of that key is migrated first)."""
        folder = self.root / "tables" / key
        with _TABLES_LOCK:
            table = _TABLES.get(folder)
            if table is None:
                table = _TABLES[folder] = VectorTable(folder)
        old = self.root / "embeddings" / key
        if old.is_dir():
            _migrate(old, table)
        return table

    def onnx_path(self, key: str) -> Path:
        """Where the ONNX export for a model key is cached."""
        return self.root / "onnx" / f"{key}.onnx"

    def get(self, key: str, sha: str) -> np.ndarray | None:
        """The cached vector, or None when absent or damaged (a damaged row is reported)."""
        return self.get_many(key, [sha])[0]

    def get_many(self, key: str, shas: Sequence[str]) -> list[np.ndarray | None]:
        """:meth:`get` for each sha, in order."""
        return self.table(key).get_many(shas)

    def put(self, key: str, sha: str, vec: np.ndarray) -> None:
        """Store one vector, as one commit (use :meth:`writer` for many)."""
        self.put_many(key, [sha], np.asarray(vec, dtype=np.float32).reshape(1, -1))

    def put_many(self, key: str, shas: Sequence[str], vectors: np.ndarray) -> None:
        """Store one vector per sha (row ``i`` of ``vectors`` for ``shas[i]``), as one commit."""
        self.table(key).append(shas, np.asarray(vectors, dtype=np.float32))

    def put_failure(self, key: str, sha: str, reason: str) -> None:
        """Remember that the file with this sha cannot be decoded, and why."""
        self.table(key).append_failures([sha], [reason])

    def get_failure(self, key: str, sha: str) -> str | None:
        """The remembered decode failure reason, or None."""
        return self.table(key).get_failure(sha)

    def nearest(
        self, key: str, queries: np.ndarray, k: int, among: Sequence[str] | None = None
    ) -> tuple[list[list[str]], np.ndarray]:
        """The ``k`` cached images nearest each query vector by cosine distance (among the
        shas ``among`` when given): shas per query and their distances, nearest first."""
        return self.table(key).nearest(queries, k, among)

    def rows(self, keys: Sequence[str], shas: Sequence[str]) -> np.ndarray | None:
        """The checked vectors of ``shas`` (one row each, repeats included), the tables of
        ``keys`` side by side (a fused backbone's parts); None when any row is not cached."""
        unique = list(dict.fromkeys(shas))
        blocks = []
        for key in keys:
            found = self.get_many(key, unique)
            if any(v is None for v in found):
                return None
            blocks.append(np.stack([v for v in found if v is not None]))
        if not unique:
            return None
        matrix = np.concatenate(blocks, axis=1)
        position = {sha: i for i, sha in enumerate(unique)}
        return matrix[[position[sha] for sha in shas]]

    def neighbours(
        self, keys: Sequence[str], shas: Sequence[str], k: int, *, exact_below: int = EXACT_BELOW
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Each row's ``k`` nearest other rows among ``shas`` by cosine distance (see
        :func:`headstart.features.neighbours.knn`), from the store's checked vectors; None
        when a row is not cached."""
        matrix = self.rows(keys, shas)
        return None if matrix is None else knn(matrix, k, exact_below=exact_below)

    def cross_pairs(
        self, keys: Sequence[str], shas: Sequence[str], groups: Sequence[str], threshold: float
    ) -> list[tuple[int, int, float]] | None:
        """Pairs of rows in different ``groups`` (splits) with cosine >= ``threshold`` (see
        :func:`headstart.features.neighbours.cross_group_pairs`); None when a row is not
        cached."""
        matrix = self.rows(keys, shas)
        return None if matrix is None else cross_group_pairs(matrix, groups, threshold)

    @contextmanager
    def writer(self, key: str) -> Iterator[StoreWriter]:
        """``with store.writer(key) as w: w.add(sha, vec)``: rows are committed every
        :data:`COMMIT_ROWS` rows or :data:`COMMIT_SECONDS` seconds, and on leaving the block
        (also when it raises, so work done before an error is kept)."""
        writer = StoreWriter(self, key)
        try:
            yield writer
        finally:
            writer.flush()

    def write_info(self, key: str, info: dict[str, object]) -> None:
        """Describe a model key in ``tables/<key>/info.json`` (for people)."""
        path = os.path.join(self.root, "tables", key, "info.json")
        if not os.path.exists(path):
            _write_atomic(path, json.dumps(info, indent=2, sort_keys=True).encode())


class StoreWriter:
    """Buffers rows for one table and commits them in batches; see :meth:`EmbeddingStore.writer`."""

    def __init__(self, store: EmbeddingStore, key: str) -> None:
        self.store, self.key = store, key
        self._shas: list[str] = []
        self._vectors: list[np.ndarray] = []
        self._failed: dict[str, str] = {}
        self._since = time.monotonic()

    def add(self, sha: str, vector: np.ndarray) -> None:
        self._shas.append(sha)
        self._vectors.append(np.asarray(vector, dtype=np.float32).reshape(-1))
        if len(self._shas) >= COMMIT_ROWS or time.monotonic() - self._since > COMMIT_SECONDS:
            self.flush()

    def add_many(self, shas: Sequence[str], vectors: np.ndarray) -> None:
        for sha, vector in zip(shas, vectors, strict=True):
            self.add(sha, vector)

    def add_failure(self, sha: str, reason: str) -> None:
        """Remember a decode failure, unless it may not last: an unreadable file may become
        readable, and which formats decode depends on the plugins installed, not on the
        file's bytes."""
        if not reason.startswith(("unreadable", "unsupported format")):
            self._failed[sha] = reason

    def flush(self) -> None:
        """Commit what is buffered (vectors, then failures)."""
        if self._shas:
            self.store.put_many(self.key, self._shas, np.stack(self._vectors))
            self._shas, self._vectors = [], []
        if self._failed:
            self.store.table(self.key).append_failures(
                list(self._failed), list(self._failed.values())
            )
            self._failed = {}
        self._since = time.monotonic()


def _migrate(old: Path, table: VectorTable) -> None:
    """Move an old per-file folder's entries into ``table`` (damaged ones are left out, as the
    old store would have discarded them), then remove the folder."""
    files = [p for p in old.glob("*/*") if p.suffix in (".emb", ".fail")]
    bar = None
    if len(files) >= _MIGRATION_BAR:
        from headstart.features.progress import ExtractProgress

        bar = ExtractProgress(len(files), f"cache {old.name} into a table", verb="migrate")
    try:
        if bar is not None:
            bar.__enter__()
        shas: list[str] = []
        vectors: list[np.ndarray] = []
        failed: dict[str, str] = {}
        for path in files:
            payload = _read_old_entry(path)
            if payload is not None and path.suffix == ".emb" and len(payload) % 4 == 0:
                shas.append(path.stem)
                vectors.append(np.frombuffer(payload, dtype="<f4"))
            elif payload is not None and path.suffix == ".fail":
                with suppress(ValueError, KeyError, TypeError):
                    failed[path.stem] = str(json.loads(payload.decode())["reason"])
            if len(shas) >= 10 * COMMIT_ROWS:
                table.append(shas, np.stack(vectors))
                shas, vectors = [], []
            if bar is not None:
                bar.advance(1)
        dims = {len(v) for v in vectors}
        if len(dims) > 1:  # cannot happen for one key; never write a ragged table
            keep = max(dims, key=lambda d: sum(len(v) == d for v in vectors))
            shas = [s for s, v in zip(shas, vectors, strict=True) if len(v) == keep]
            vectors = [v for v in vectors if len(v) == keep]
        if shas:
            table.append(shas, np.stack(vectors))
        if failed:
            table.append_failures(list(failed), list(failed.values()))
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    info = old / "info.json"
    if info.is_file() and not (table.folder / "info.json").exists():
        table.folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(info, table.folder / "info.json")
    shutil.rmtree(old, ignore_errors=True)
    _log.info("headstart: migrated %d cached embeddings of %s to a table", len(files), old.name)
