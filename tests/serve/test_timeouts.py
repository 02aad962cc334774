"""Slow and vanishing clients against a real uvicorn server (raw sockets, a 1 s timeout): a
request head that never completes is dropped, a stalled body gets 408, an idle kept-alive
connection is closed, and a client that hangs up mid-upload costs no traceback."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator

import pytest

from headstart.demo import demo_data_dir
from headstart.result import FitResult
from headstart.serve import Limits, create_app
from headstart.serve.server import uvicorn_options
from serving import serving

TIMEOUT_S = 1.0
#: How long past the timeout a test waits for the server to act (a busy machine is slow).
SLACK_S = 2.5
MULTIPART = b"multipart/form-data; boundary=abc"


class Records(logging.Handler):
    """Every log record, for tests that look for tracebacks."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def port(plain_run: FitResult) -> Iterator[int]:
    """A real uvicorn server as ``headstart serve --timeout 1`` runs it, on a free port."""
    app = create_app(plain_run.model, limits=Limits(timeout_s=TIMEOUT_S))
    yield from serving(app, **uvicorn_options(TIMEOUT_S))


@pytest.fixture()
def records() -> Iterator[Records]:
    """The log records of uvicorn and headstart while the test runs (headstart's at INFO)."""
    handler = Records()
    loggers = [logging.getLogger(n) for n in ("uvicorn.error", "uvicorn.asgi", "headstart")]
    level = loggers[-1].level
    loggers[-1].setLevel(logging.INFO)
    for logger in loggers:
        logger.addHandler(handler)
    yield handler
    for logger in loggers:
        logger.removeHandler(handler)
    loggers[-1].setLevel(level)


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _until_closed(sock: socket.socket, within_s: float) -> tuple[bytes, bool]:
    """What the server sends until it closes the connection (True) or ``within_s`` passes."""
    data, deadline = b"", time.monotonic() + within_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _head(path: str, length: int | None = None, method: str = "POST") -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    if length is not None:
        lines += [b"Content-Type: " + MULTIPART, f"Content-Length: {length}".encode()]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _part_start() -> bytes:
    return b'--abc\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'


def test_a_request_head_that_never_arrives_is_dropped(port: int) -> None:
    with _connect(port) as silent:  # connects and says nothing
        started = time.monotonic()
        assert _until_closed(silent, TIMEOUT_S + SLACK_S) == (b"", True)
        assert time.monotonic() - started >= TIMEOUT_S * 0.9
    with _connect(port) as trickle:  # a header line now and then: still one deadline
        trickle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started, closed = time.monotonic(), False
        while not closed and time.monotonic() - started < TIMEOUT_S + SLACK_S:
            try:
                trickle.sendall(b"X-Slow: 1\r\n")
            except OSError:  # the server has hung up
                break
            closed = _until_closed(trickle, 0.2)[1]
        assert time.monotonic() - started < TIMEOUT_S + SLACK_S, "the trickled head was kept"


def test_a_stalled_body_gets_408_and_the_connection_closes(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(_head("/v1/predict", length=100_000) + _part_start() + b"x" * 1000)
        data, closed = _until_closed(sock, TIMEOUT_S + SLACK_S)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"x-content-type-options: nosniff" in head.lower()
    assert "stalled" in json.loads(body)["error"] and closed


def test_an_idle_kept_alive_connection_is_closed(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(_head("/healthz", method="GET"))
        data, closed = _until_closed(sock, TIMEOUT_S + SLACK_S)
    assert data.startswith(b"HTTP/1.1 200") and b'"status":"ok"' in data
    assert closed  # uvicorn's default keep-alive (5 s) would still hold it


def test_an_aborted_upload_logs_no_traceback(port: int, records: Records) -> None:
    photo = sorted((demo_data_dir() / "test" / "hat").glob("*.jpg"))[0].read_bytes()
    for _ in range(3):
        with _connect(port) as sock:
            sock.sendall(_head("/v1/predict", length=200_000) + _part_start() + photo[:5000])
            time.sleep(0.1)  # the server is reading the body when the client hangs up
    time.sleep(0.3)
    with _connect(port) as sock:  # and the server keeps answering
        sock.sendall(_head("/healthz", method="GET"))
        assert _until_closed(sock, TIMEOUT_S + SLACK_S)[0].startswith(b"HTTP/1.1 200")
    tracebacks = [r for r in records.records if r.exc_info or r.levelno >= logging.WARNING]
    assert not tracebacks, [r.getMessage() for r in tracebacks]
    gone = [r for r in records.records if "went away" in r.getMessage()]
    assert len(gone) == 3 and all(r.levelno == logging.INFO for r in gone)  # one quiet line each
