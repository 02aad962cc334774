"""Atomic file writes (a crash never leaves a half-written file under its final name),
verified cache entries (a damaged entry is never used), and where the caches live."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path

__all__ = [
    "FILE_MODE",
    "FOLDER_MODE",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_entry",
    "default_cache_root",
    "discard_entry",
    "entry_digest",
    "file_digest",
    "read_entry",
    "seal",
    "write_entry",
]


def default_cache_root() -> Path:
    """``$HEADSTART_CACHE``, else ``$XDG_CACHE_HOME/headstart``, else ``~/.cache/headstart``."""
    if os.environ.get("HEADSTART_CACHE"):
        return Path(os.environ["HEADSTART_CACHE"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "headstart"
    return Path.home() / ".cache" / "headstart"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; finished files get the usual modes.
FILE_MODE = 0o666 & ~_umask()
FOLDER_MODE = 0o777 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file in the same folder, fsync it, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# -- verified cache entries ------------------------------------------------------------------
# A cache entry is its file plus ``<file>.sha256`` (the file's digest, written after it): an
# entry without its digest was never finished; one whose bytes differ from its digest is
# damaged, removed and reported once, and reads as missing so the caller computes it again.

_log = logging.getLogger("headstart")
_DIGEST_SUFFIX = ".sha256"


def _digest_path(path: Path) -> Path:
    return path.with_name(path.name + _DIGEST_SUFFIX)


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes, read now (no memo: this is what integrity checks use)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def seal(path: Path, sha256: str | None = None) -> str:
    """Record ``path``'s digest (computed when not given): the entry is finished."""
    sha = sha256 or file_digest(path)
    atomic_write_text(_digest_path(path), sha + "\n")
    return sha


def write_entry(path: Path, data: bytes) -> None:
    """Write a cache entry atomically, then its digest."""
    atomic_write_bytes(path, data)
    seal(path, hashlib.sha256(data).hexdigest())


def entry_digest(path: Path) -> str | None:
    """The digest recorded for an entry, or None when it has none (not finished)."""
    try:
        text = _digest_path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if len(text) == 64 else None


def discard_entry(path: Path, why: str) -> None:
    """Remove a damaged entry and its digest, and say so once."""
    for file in (path, _digest_path(path)):
        file.unlink(missing_ok=True)
    _log.warning("headstart: cache entry %s %s: removed, it will be computed again", path, why)


def read_entry(path: Path) -> bytes | None:
    """An entry's bytes when they match their digest; None when it is absent or unfinished,
    and None (after :func:`discard_entry`) when it is damaged."""
    expected = entry_digest(path)
    if expected is None:
        return None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if hashlib.sha256(data).hexdigest() != expected:
        discard_entry(path, "does not match its sha256")
        return None
    return data


def check_entry(path: Path) -> bool:
    """Whether a (large) entry is present, finished and intact, without keeping its bytes;
    a damaged one is discarded."""
    expected = entry_digest(path)
    if expected is None or not path.is_file():
        return False
    if file_digest(path) != expected:
        discard_entry(path, "does not match its sha256")
        return False
    return True
