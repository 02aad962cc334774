"""The on-disk embedding cache: one small file per (model key, image sha256).

An entry is ``magic | length | blake2b digest | float32 payload``.  A truncated or bit-flipped
entry fails its size or digest check, is removed (and reported) and reads as missing, so it is
recomputed.
Writes go to a temp file in the same folder and are renamed into place, so readers never see a
half-written entry (no fsync: the digest already catches data lost in a power cut).
Decode failures are cached too (``.fail`` files), so a broken image is not re-decoded every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from headstart.fsutil import discard_entry

if TYPE_CHECKING:
    from headstart.backbones.registry import BackboneRef

__all__ = ["STORE_FORMAT", "EmbeddingStore", "model_key"]

STORE_FORMAT = 1
_MAGIC = b"HSE1"
_HEADER = struct.Struct("<4sI16s")  # magic, number of float32 values, digest of the payload


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


class EmbeddingStore:
    """Cached feature vectors keyed by (model key, file sha256), under ``root/embeddings``, and
    the ONNX exports of the backbones under ``root/onnx``; see :func:`model_key`.  The root
    comes from :class:`headstart.cache.CacheRoot`, which owns every cache."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.root)!r})"

    def _path(self, key: str, sha: str, suffix: str) -> str:
        return os.path.join(self.root, "embeddings", key, sha[:2], sha + suffix)

    def onnx_path(self, key: str) -> Path:
        """Where the ONNX export for a model key is cached."""
        return self.root / "onnx" / f"{key}.onnx"

    def get(self, key: str, sha: str) -> np.ndarray | None:
        """The cached vector, or None when absent or damaged (a damaged entry is removed)."""
        path = self._path(key, sha, ".emb")
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        payload = _unseal(data)
        if payload is not None and len(payload) % 4 == 0:
            return np.frombuffer(payload, dtype="<f4").copy()
        discard_entry(Path(path), "is damaged")
        return None

    def get_many(self, key: str, shas: Sequence[str]) -> list[np.ndarray | None]:
        """:meth:`get` for each sha, in order."""
        return [self.get(key, sha) for sha in shas]

    def put(self, key: str, sha: str, vec: np.ndarray) -> None:
        """Store one vector (written as little-endian float32), atomically."""
        payload = np.ascontiguousarray(vec, dtype="<f4").reshape(-1).tobytes()
        _write_atomic(self._path(key, sha, ".emb"), _seal(payload))

    def put_failure(self, key: str, sha: str, reason: str) -> None:
        """Remember that the file with this sha cannot be decoded, and why."""
        text = json.dumps({"reason": reason})
        _write_atomic(self._path(key, sha, ".fail"), _seal(text.encode()))

    def get_failure(self, key: str, sha: str) -> str | None:
        """The cached decode failure reason, or None (a damaged record is removed; one of an
        older release, without a digest, is simply decoded again)."""
        path = self._path(key, sha, ".fail")
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except (FileNotFoundError, NotADirectoryError):
            return None
        payload = _unseal(data)
        try:
            if payload is not None:
                return str(json.loads(payload.decode())["reason"])
        except (ValueError, KeyError, TypeError):
            pass
        if data.startswith(b"{"):  # an older release's record: no digest to check
            Path(path).unlink(missing_ok=True)
        else:
            discard_entry(Path(path), "is damaged")
        return None

    def write_info(self, key: str, info: dict[str, object]) -> None:
        """Describe a model key in ``embeddings/<key>/info.json`` (for people)."""
        path = os.path.join(self.root, "embeddings", key, "info.json")
        if not os.path.exists(path):
            _write_atomic(path, json.dumps(info, indent=2, sort_keys=True).encode())
