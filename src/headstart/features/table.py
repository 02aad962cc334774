"""One model key's embeddings as a columnar table: Arrow IPC fragments under versioned manifests.

Layout of a table folder (``<cache>/tables/<model key>/``):

- ``data/<id>.arrow``: one fragment per commit, an uncompressed Arrow IPC file read through a
  memory map (zero copy).  A vector fragment has the columns ``sha`` (the 32 raw bytes of the
  file's sha256), ``vector`` (fixed-size list of float32) and ``check`` (8-byte blake2b of the
  sha and the vector's bytes); a failure fragment has ``sha``, ``reason`` (utf-8) and ``check``.
- ``versions/<n>.json``: manifest ``n`` lists the fragments of version ``n`` (and its own
  digest).  A commit writes its fragment under a fresh name, then publishes manifest ``n + 1``
  with ``os.link``, which fails when another writer published ``n + 1`` first: the commit then
  re-reads the latest manifest and tries ``n + 2``.  So concurrent writers never lose each
  other's rows, and readers see whole commits or nothing (a fragment not yet in a manifest is
  invisible; a crash leaves at most an orphan fragment, removed by the next compaction).

Every row read is checked against its ``check`` digest: a damaged row reads as missing (so it
is computed again, and the newer row wins), a fragment that cannot be opened is dropped from the
next manifest; either is reported once, in one line.  A sha written twice (two writers, a
recomputed damaged row) resolves to its latest row.  Many small fragments are merged into one
:data:`MERGE_FANOUT` at a time, tier by tier (as log-structured stores do).

Measured against the per-file store, LanceDB and Parquet fragments in
``benchmarks/store_backends.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MERGE_FANOUT", "VectorTable"]

TABLE_FORMAT = 1
#: Fragments of one size tier that are merged into one (see ``VectorTable._maybe_compact``).
MERGE_FANOUT = 8
#: Rows of the smallest tier (a writer's usual commit).
_TIER_BASE = 2_048
#: Old manifests kept for readers that are still opening one.
_KEEP_VERSIONS = 4
#: Age (seconds) after which a fragment no manifest lists is a crashed writer's leftover.
_ORPHAN_AGE_S = 3600
#: Rows compared with the queries at a time (256 MB of float32 at 1280 dimensions).
_SEARCH_BLOCK = 50_000
#: Candidates kept beyond k, so a damaged row among the nearest still leaves k.
_SPARE = 4
_SHA = np.dtype("S32")
_CHECK = np.dtype("<u8")
_log = logging.getLogger("headstart")


def _row_check(sha: bytes, payload: bytes) -> int:
    """A row's digest (as the little-endian integer the ``check`` column holds)."""
    digest = hashlib.blake2b(_b32(sha) + payload, digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _b32(sha: bytes) -> bytes:
    """A raw sha as 32 bytes (numpy's ``S32`` scalars drop trailing zero bytes)."""
    return bytes(sha).ljust(32, b"\0")


def _raw_shas(shas: Sequence[str]) -> np.ndarray:
    """Hex sha256 strings as an array of 32-byte values ("" or a malformed one: all zeros)."""
    out = np.zeros(len(shas), dtype=_SHA)
    for i, sha in enumerate(shas):
        try:
            out[i] = bytes.fromhex(sha)
        except ValueError:
            continue
    return out


def _pa() -> Any:
    import pyarrow as pa  # imported on first use: the CLI's start-up never pays for it

    return pa


@dataclass
class _Fragment:
    """An opened fragment: its raw sha column, checks and either vectors or reasons."""

    name: str
    kind: str  # "vectors" or "failures"
    shas: np.ndarray  # S32
    checks: np.ndarray  # uint64
    vectors: np.ndarray | None = None  # (n, d) float32, a view of the memory map
    reasons: list[str] | None = None
    order: np.ndarray | None = None
    """Rows in sha order (stable), when the file's rows are not already (they are as written
    here: a lookup is then a binary search of the memory-mapped column)."""

    def find(self, raw: np.ndarray) -> np.ndarray:
        """Each raw sha's latest row in this fragment, or -1."""
        keys = self.shas if self.order is None else self.shas[self.order]
        pos = np.searchsorted(keys, raw, side="right") - 1
        found = pos >= 0
        found[found] = keys[pos[found]] == raw[found]
        rows = pos if self.order is None else self.order[np.maximum(pos, 0)]
        return np.where(found, rows, -1)


@dataclass
class _View:
    """The fragments of one manifest version.  Lookups search the fragments newest first;
    the table-wide index (every sha's latest row, for searches and merges) is built
    on first use."""

    version: int
    fragments: list[_Fragment]
    failures: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    _index: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def sorted_shas(self) -> np.ndarray:
        return self._built()[0]

    @property
    def where(self) -> np.ndarray:
        """(fragment, row) of each of :attr:`sorted_shas`."""
        return self._built()[1]

    @property
    def dim(self) -> int | None:
        dims = {f.vectors.shape[1] for f in self.fragments if f.vectors is not None}
        return max(dims) if dims else None

    def _built(self) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            self._index = _latest_rows(self.fragments)
        return self._index


class VectorTable:
    """The table of one model key in ``folder``; see the module docstring.  Cheap to create:
    nothing is read before the first lookup, and opened fragments are kept per process."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._view: _View | None = None
        self._opened: dict[str, _Fragment] = {}
        self._reported: set[tuple[str, int]] = set()

    # -- reading -----------------------------------------------------------------------------

    def latest_version(self) -> int:
        """The newest published manifest's number (0: nothing committed yet)."""
        numbers = self._versions()
        return numbers[-1] if numbers else 0

    def _versions(self) -> list[int]:
        try:
            names = os.listdir(self.folder / "versions")
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def _manifest(self) -> tuple[int, list[dict[str, Any]]]:
        """The newest readable manifest: (version, fragment records); (0, []) when none."""
        for version in reversed(self._versions()):
            record = self._read_manifest(version)
            if record is not None:
                return version, list(record["fragments"])
        return 0, []

    def _read_manifest(self, version: int) -> dict[str, Any] | None:
        path = self.folder / "versions" / f"{version:08d}.json"
        try:
            record = json.loads(path.read_bytes())
            body = {k: v for k, v in record.items() if k != "check"}
            ok = record["check"] == _manifest_check(body) and isinstance(body["fragments"], list)
        except FileNotFoundError:
            return None  # pruned by a writer after we listed it
        except (OSError, ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            self._report(path, "is damaged: an older version is read instead")
            return None
        return dict(record)

    def view(self) -> _View:
        """The current rows, reopened when another commit has been published since."""
        latest = self.latest_version()
        if self._view is not None and self._view.version == latest:
            return self._view
        for _ in range(3):
            version, records = self._manifest()
            fragments = [self._open(record, report=False) for record in records]
            if all(f is not None for f in fragments) or self.latest_version() == version:
                break  # else a compaction replaced a file meanwhile: read the newer manifest
        fragments = [f or self._open(r) for f, r in zip(fragments, records, strict=True)]
        self._view = _index(version, [f for f in fragments if f is not None])
        return self._view

    def _open(self, record: dict[str, Any], *, report: bool = True) -> _Fragment | None:
        name = str(record.get("file", ""))
        if name in self._opened:
            return self._opened[name]
        path = self.folder / "data" / name
        try:
            fragment = _read_fragment(path, name, str(record.get("kind")), int(record["rows"]))
        except FileNotFoundError:
            if report:
                self._report(path, "is missing: its rows will be computed again")
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._report(path, f"is damaged ({exc}): its rows will be computed again")
            return None
        self._opened[name] = fragment
        return fragment

    def get_many(self, shas: Sequence[str]) -> list[np.ndarray | None]:
        """Each sha's vector (a float32 copy), or None when absent or damaged."""
        view = self.view()
        out: list[np.ndarray | None] = [None] * len(shas)
        raw = _raw_shas(shas)
        todo = np.arange(len(shas))
        for fragment in reversed(view.fragments):  # the newest row of a sha wins
            if fragment.vectors is None or not len(todo):
                continue
            rows = fragment.find(raw[todo])
            for i, row in zip(todo[rows >= 0], rows[rows >= 0], strict=True):
                vec = fragment.vectors[row]
                if _row_check(raw[i], vec.tobytes()) == fragment.checks[row]:
                    out[i] = np.array(vec, dtype=np.float32)
                else:
                    self._report_row(fragment, int(row))
            todo = todo[rows < 0]
        return out

    def get_failure(self, sha: str) -> str | None:
        """The remembered decode failure of ``sha``, or None."""
        view = self.view()
        raw = _raw_shas([sha])[0]
        found = view.failures.get(_b32(raw))
        if found is None:
            return None
        fragment = view.fragments[found[0]]
        assert fragment.reasons is not None
        reason = fragment.reasons[found[1]]
        if _row_check(raw, reason.encode()) != fragment.checks[found[1]]:
            self._report_row(fragment, found[1])
            return None
        return reason

    def __len__(self) -> int:
        """Distinct shas with a vector."""
        return len(self.view().sorted_shas)

    def nearest(
        self, queries: np.ndarray, k: int, among: Sequence[str] | None = None
    ) -> tuple[list[list[str]], np.ndarray]:
        """The ``k`` rows nearest each query by cosine distance (exact), among the given shas or
        the whole table: ``(shas per query, distances (q, k'))``, nearest first.  The table is
        searched fragment by fragment on its memory maps, a block at a time, so memory stays
        bounded at any size; the rows returned are checked (a damaged one is left out)."""
        view = self.view()
        q = _unit(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        positions = np.arange(len(view.sorted_shas))
        if among is not None:
            raw = _raw_shas(list(among))
            pos = np.searchsorted(view.sorted_shas, raw)
            pos = np.minimum(pos, max(len(view.sorted_shas) - 1, 0))
            positions = np.unique(pos[view.sorted_shas[pos] == raw]) if len(pos) else positions[:0]
        want = min(k + _SPARE, len(positions))
        best_pos = np.zeros((len(q), 0), dtype=np.int64)
        best_sim = np.zeros((len(q), 0), dtype=np.float32)
        for start in range(0, len(positions), _SEARCH_BLOCK):
            block = positions[start : start + _SEARCH_BLOCK]
            x = _unit(self._rows(view, block))
            sims = q @ x.T
            best_pos = np.concatenate([best_pos, np.broadcast_to(block, sims.shape)], axis=1)
            best_sim = np.concatenate([best_sim, sims], axis=1)
            if best_sim.shape[1] > want:
                top = np.argpartition(-best_sim, want - 1, axis=1)[:, :want]
                best_pos = np.take_along_axis(best_pos, top, axis=1)
                best_sim = np.take_along_axis(best_sim, top, axis=1)
        order = np.argsort(-best_sim, axis=1, kind="stable")
        best_pos = np.take_along_axis(best_pos, order, axis=1)
        best_sim = np.take_along_axis(best_sim, order, axis=1)
        shas: list[list[str]] = []
        dists = np.full((len(q), min(k, want)), np.nan, dtype=np.float32)
        for i in range(len(q)):
            kept = [j for j, p in enumerate(best_pos[i]) if self._intact(view, int(p))][:k]
            shas.append([_b32(view.sorted_shas[best_pos[i, j]]).hex() for j in kept])
            dists[i, : len(kept)] = np.clip(1.0 - best_sim[i, kept], 0.0, 2.0)
        return shas, dists

    def _rows(self, view: _View, positions: np.ndarray) -> np.ndarray:
        """The vectors at ``positions`` of the view's sorted index (unchecked: for search)."""
        out = np.empty((len(positions), view.dim or 0), dtype=np.float32)
        where = view.where[positions]
        for frag_index in np.unique(where[:, 0]):
            mine = where[:, 0] == frag_index
            vectors = view.fragments[frag_index].vectors
            assert vectors is not None
            out[mine] = vectors[where[mine, 1]]
        return out

    def _intact(self, view: _View, position: int) -> bool:
        frag_index, row = view.where[position]
        fragment = view.fragments[frag_index]
        assert fragment.vectors is not None
        vec = fragment.vectors[row]
        if _row_check(view.sorted_shas[position], vec.tobytes()) == fragment.checks[row]:
            return True
        self._report_row(fragment, int(row))
        return False

    # -- writing -----------------------------------------------------------------------------

    def append(self, shas: Sequence[str], vectors: np.ndarray) -> None:
        """Commit one vector per sha (row ``i`` for ``shas[i]``) as one new version."""
        matrix = np.ascontiguousarray(vectors, dtype="<f4")
        if matrix.ndim != 2 or len(matrix) != len(shas):
            raise ValueError(f"expected {len(shas)} vectors, got an array of shape {matrix.shape}")
        if not len(shas):
            return
        raw = _raw_shas(shas)
        order = np.argsort(raw, kind="stable")  # rows in sha order: lookups binary-search
        raw, matrix = raw[order], matrix[order]
        checks = [_row_check(s, v.tobytes()) for s, v in zip(raw, matrix, strict=True)]
        table = _vector_table(raw, matrix, np.array(checks, dtype=_CHECK))
        self._commit(table, "vectors")

    def append_failures(self, shas: Sequence[str], reasons: Sequence[str]) -> None:
        """Commit decode failures (one reason per sha) as one new version."""
        if not len(shas):
            return
        raw = _raw_shas(shas)
        checks = [_row_check(s, r.encode()) for s, r in zip(raw, reasons, strict=True)]
        pa = _pa()
        table = pa.table(
            {
                "sha": _sha_column(raw),
                "reason": pa.array(list(reasons), type=pa.string()),
                "check": _check_column(checks),
            }
        )
        self._commit(table, "failures")

    def _commit(self, table: Any, kind: str) -> None:
        name = self._write_fragment(table)
        record = {"file": name, "kind": kind, "rows": table.num_rows}
        self._publish(lambda fragments: [*fragments, record])
        if kind == "vectors":
            self._maybe_compact()

    def _write_fragment(self, table: Any) -> str:
        pa = _pa()
        folder = self.folder / "data"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}.arrow"
        tmp = folder / f".tmp.{name}"
        try:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
                out.write_table(table, max_chunksize=max(1, table.num_rows))
            os.replace(tmp, folder / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return name

    def _publish(self, change: Any) -> int:
        """Publish ``change(latest fragments)`` as the next version; retried on a race."""
        folder = self.folder / "versions"
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            version, fragments = self._manifest()
            body = {"format": TABLE_FORMAT, "version": version + 1, "fragments": change(fragments)}
            record = {**body, "check": _manifest_check(body)}
            tmp = folder / f".tmp.{uuid.uuid4().hex}"
            tmp.write_text(json.dumps(record))
            try:
                os.link(tmp, folder / f"{version + 1:08d}.json")
            except FileExistsError:
                continue  # another writer published this version first: build on theirs
            finally:
                tmp.unlink(missing_ok=True)
            for old in self._versions():
                if old <= version + 1 - _KEEP_VERSIONS:
                    (folder / f"{old:08d}.json").unlink(missing_ok=True)
            return version + 1

    def _maybe_compact(self) -> None:
        """Tiered merging: once :data:`MERGE_FANOUT` vector fragments share a size tier (rows
        within a factor of the fan-out), they become one fragment of the next tier (superseded
        and damaged rows left behind).  Each row is rewritten about log_8(rows / 2048) times,
        and a table keeps fewer than 8 fragments per tier (about 30 at 10M rows); files no
        manifest lists any more are removed."""
        _, records = self._manifest()
        tiers: dict[int, list[dict[str, Any]]] = {}
        for r in records:
            if r.get("kind") == "vectors":
                tiers.setdefault(_tier(int(r["rows"])), []).append(r)
        full = [group for _, group in sorted(tiers.items()) if len(group) >= MERGE_FANOUT]
        if not full:
            return
        names = {str(r["file"]) for r in full[0]}
        view = self.view()
        members = [f for f, fragment in enumerate(view.fragments) if fragment.name in names]
        picked = np.flatnonzero(np.isin(view.where[:, 0], members))
        if not len(picked):
            return
        # Rows are copied with the check they were written with, not checked and re-sealed:
        # a damaged row stays detectable (and superseded once recomputed) instead of being
        # laundered into a valid-looking one, and merging costs no hashing.
        merged = self._rows(view, picked)
        where = view.where[picked]
        checks = np.empty(len(picked), dtype=_CHECK)
        for f in np.unique(where[:, 0]):
            mine = where[:, 0] == f
            checks[mine] = view.fragments[f].checks[where[mine, 1]]
        table = _vector_table(view.sorted_shas[picked], merged, checks)
        name = self._write_fragment(table)
        record = {"file": name, "kind": "vectors", "rows": table.num_rows}

        def replace_small(fragments: list[dict[str, Any]]) -> list[dict[str, Any]]:
            # The merged rows are each sha's latest row, so the merged fragment goes last:
            # an older fragment outside the merge may hold a superseded row of the same sha.
            # (A row another writer commits meanwhile for one of those shas is the same
            # image's vector again, computed the same way: either may win.)
            kept = [r for r in fragments if str(r.get("file")) not in names]
            return [*kept, record]

        self._publish(replace_small)
        self._drop_replaced(names)
        self._remove_orphans()

    def _remove_orphans(self) -> None:
        """Remove fragment files no kept manifest lists.  Only old ones: a file written in the
        last hour may be another writer's fragment that is about to be published."""
        listed: set[str] = set()
        for version in self._versions():
            record = self._read_manifest(version)
            if record is not None:
                listed.update(str(r.get("file")) for r in record["fragments"])
        cutoff = time.time() - _ORPHAN_AGE_S
        for path in (self.folder / "data").glob("*.arrow"):
            with suppress(OSError):
                if path.name not in listed and path.stat().st_mtime < cutoff:
                    path.unlink()

    def _drop_replaced(self, names: set[str]) -> None:
        """Remove the files a compaction replaced (open memory maps stay valid; a reader that
        had yet to open one reads the next manifest, see :meth:`view`)."""
        for name in names:
            (self.folder / "data" / name).unlink(missing_ok=True)

    # -- reports -----------------------------------------------------------------------------

    def _report(self, path: Path, why: str) -> None:
        if (str(path), -1) not in self._reported:
            self._reported.add((str(path), -1))
            _log.warning("headstart: cache table %s %s", path, why)

    def _report_row(self, fragment: _Fragment, row: int) -> None:
        if (fragment.name, row) not in self._reported:
            self._reported.add((fragment.name, row))
            _log.warning(
                "headstart: cache entry %s row %d is damaged: it will be computed again",
                self.folder / "data" / fragment.name,
                row,
            )


def _check_column(checks: list[int]) -> Any:
    return _fixed(np.array(checks, dtype=_CHECK).tobytes(), 8, len(checks))


def _vector_table(raw: np.ndarray, matrix: np.ndarray, checks: np.ndarray) -> Any:
    """A vector fragment's Arrow table: raw shas, float32 rows and their uint64 checks."""
    pa = _pa()
    values = pa.array(np.ascontiguousarray(matrix, dtype="<f4").reshape(-1), type=pa.float32())
    return pa.table(
        {
            "sha": _sha_column(raw),
            "vector": pa.FixedSizeListArray.from_arrays(values, matrix.shape[1]),
            "check": _fixed(np.ascontiguousarray(checks, dtype=_CHECK).tobytes(), 8, len(checks)),
        }
    )


def _sha_column(raw: np.ndarray) -> Any:
    return _fixed(np.ascontiguousarray(raw, dtype=_SHA).tobytes(), 32, len(raw))


def _fixed(data: bytes, width: int, n: int) -> Any:
    """A fixed-size binary Arrow array over ``data`` (numpy's bytes values would lose their
    trailing zero bytes on the way through Python objects)."""
    pa = _pa()
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), n, [None, pa.py_buffer(data)])


def _manifest_check(body: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=16).hexdigest()


def _read_fragment(path: Path, name: str, kind: str, rows: int) -> _Fragment:
    pa = _pa()
    source = pa.memory_map(str(path), "r")
    table = pa.ipc.open_file(source).read_all()
    if table.num_rows != rows:
        raise ValueError(f"{table.num_rows} rows, its manifest says {rows}")
    sha = _one_chunk(table.column("sha"))
    shas = np.frombuffer(sha.buffers()[1], dtype=_SHA, count=len(sha), offset=sha.offset * 32)
    check = _one_chunk(table.column("check"))
    checks = np.frombuffer(
        check.buffers()[1], dtype=_CHECK, count=len(check), offset=check.offset * 8
    )
    if kind == "failures":
        reasons = [str(r) for r in table.column("reason").to_pylist()]
        return _Fragment(name, kind, shas, checks, reasons=reasons)
    if kind != "vectors":
        raise ValueError(f"unknown fragment kind {kind!r}")
    column = _one_chunk(table.column("vector"))
    dim = column.type.list_size
    values = column.values.to_numpy(zero_copy_only=True)
    vectors = values[column.offset * dim : (column.offset + len(column)) * dim].reshape(-1, dim)
    in_order = bool(np.all(shas[:-1] <= shas[1:])) if len(shas) > 1 else True
    order = None if in_order else np.argsort(shas, kind="stable")
    return _Fragment(name, kind, shas, checks, vectors=vectors, order=order)


def _tier(rows: int) -> int:
    """A fragment's size tier: 0 below ``_TIER_BASE * MERGE_FANOUT`` rows, then one per factor
    of the fan-out."""
    tier, size = 0, _TIER_BASE * MERGE_FANOUT
    while rows >= size:
        tier, size = tier + 1, size * MERGE_FANOUT
    return tier


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.asarray(x / np.clip(norms, 1e-12, None), dtype=np.float32)


def _one_chunk(column: Any) -> Any:
    """A column as one array, without a copy when it is one chunk (as written here): the
    vectors stay a view of the memory map."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()


def _index(version: int, fragments: list[_Fragment]) -> _View:
    """A view of ``fragments`` (oldest first), with the remembered failures indexed."""
    view = _View(version, fragments)
    for i, fragment in enumerate(fragments):
        if fragment.kind == "failures":
            for row, sha in enumerate(fragment.shas):
                view.failures[_b32(sha)] = (i, row)
    return view


def _latest_rows(fragments: list[_Fragment]) -> tuple[np.ndarray, np.ndarray]:
    """Every sha (sorted) and its latest row (fragment, row): later fragments win, and within
    one the later row."""
    parts = [(i, f) for i, f in enumerate(fragments) if f.kind == "vectors" and len(f.shas)]
    if not parts:
        return np.zeros(0, _SHA), np.zeros((0, 2), np.int64)
    shas = np.concatenate([f.shas for _, f in parts])
    where = np.concatenate(
        [np.stack([np.full(len(f.shas), i), np.arange(len(f.shas))], axis=1) for i, f in parts]
    )
    # the last occurrence of each sha wins: unique() keeps the first, so reverse first
    unique, first = np.unique(shas[::-1], return_index=True)
    return unique, where[::-1][first]
