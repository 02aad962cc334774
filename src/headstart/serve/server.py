"""How uvicorn runs the service: :func:`uvicorn_options` with a request-head timeout.

uvicorn times out idle keep-alive connections, but not a connection whose request never
arrives: one that sends nothing, or trickles its headers a byte at a time, is held for ever
(ASGI middleware cannot help: the app only sees a request once its head is complete).
:class:`HeadTimeoutProtocol` closes such a connection after the timeout; the body is timed in
the app (:class:`headstart.serve.guard.ReadTimeout`, which answers 408).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["HeadTimeoutProtocol", "head_timeout_protocol", "uvicorn_options"]

#: Keep-alive connections idle for longer than this are closed (uvicorn's default).
KEEP_ALIVE_S = 5

_log = logging.getLogger("headstart.serve")


class HeadTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head has not arrived in full
    ``head_timeout_s`` after the connection opened, or after the first byte of the next request
    on a kept-alive connection (the idle time before that byte is keep-alive's to time)."""

    head_timeout_s: float = 30.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        # uvicorn makes a new cycle for each request whose head is parsed: while the cycle is
        # still this one, the next head is awaited.
        self._awaited_after: object = self.cycle
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._head_timer is None and self.cycle is self._awaited_after:
            self._arm()  # the first bytes of the next request
        super().data_received(data)
        if self.cycle is not self._awaited_after:
            self._disarm()  # the head is in: the app times the body

    def on_response_complete(self) -> None:
        self._awaited_after = self.cycle
        super().on_response_complete()  # may start a pipelined request already buffered
        if self.cycle is not self._awaited_after:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # An upgraded connection (a WebSocket) belongs to another protocol by now.
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        _log.info("closed %s: no request within %g s", client, self.head_timeout_s)
        self.transport.close()


def head_timeout_protocol(timeout_s: float) -> type[HeadTimeoutProtocol]:
    """:class:`HeadTimeoutProtocol` with ``timeout_s`` (uvicorn's ``http=`` takes a class)."""

    class Protocol(HeadTimeoutProtocol):
        head_timeout_s = timeout_s

    return Protocol


def uvicorn_options(timeout_s: float) -> dict[str, Any]:
    """What ``uvicorn.run`` / ``uvicorn.Config`` needs for the service's timeouts: the request
    head within ``timeout_s``, keep-alive connections idle for at most 5 s (less when
    ``timeout_s`` is)."""
    return {
        "http": head_timeout_protocol(timeout_s),
        "timeout_keep_alive": max(1, min(KEEP_ALIVE_S, round(timeout_s))),
    }
