"""Helpers the service's tests share: real photos and hostile uploads, and a real uvicorn
server in a thread."""

from __future__ import annotations

import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from headstart.demo import demo_data_dir

Upload = list[tuple[str, tuple[str, bytes, str]]]


def photo(cls: str = "hat", i: int = 0) -> bytes:
    """The bytes of a bundled demo test photo."""
    return sorted((demo_data_dir() / "test" / cls).glob("*.jpg"))[i].read_bytes()


def files(*items: tuple[str, bytes]) -> Upload:
    """A multipart ``files`` field per (name, bytes)."""
    return [("files", (name, data, "application/octet-stream")) for name, data in items]


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb's calling card)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def serving(app: Any, **options: Any) -> Iterator[int]:
    """Run ``app`` under uvicorn (with ``options``) on a free loopback port in a thread; yields
    the port, stops the server after."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield port
    server.should_exit = True
    thread.join(timeout=10)
