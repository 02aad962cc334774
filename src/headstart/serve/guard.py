"""What every request passes before the routes: the Host and Origin allow-list (DNS rebinding
and cross-site requests), the security headers on every response, and the body read timeout.

A page on any web site can make a browser send requests to ``localhost``: by DNS rebinding
(``evil.example`` resolves to 127.0.0.1; the browser sends ``Host: evil.example`` and lets the
page read the answers) or cross-origin (``Origin: http://evil.example``).  :class:`HostGuard`
answers both unless the name is in the allow-list: the loopback names (any port), plus the
names the server is told to accept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headstart.errors import ConfigError
from headstart.serve.uploads import ApiError, json_error

__all__ = [
    "ANY_HOST",
    "LOOPBACK_HOSTS",
    "HostAllowList",
    "HostGuard",
    "ReadTimeout",
    "SecurityHeaders",
    "host_name",
    "security_headers",
    "serving_hosts",
]

#: Always allowed: a browser only sends these for pages on this machine.
LOOPBACK_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
#: The allow-list entry that turns the check off (behind a proxy that checks Host itself).
ANY_HOST = "*"
#: Bind addresses that name no host: the names clients use are not known from them.
_WILDCARD_BINDS = frozenset({"", "0.0.0.0", "::", "[::]"})
#: No page may frame this service (clickjacking); merged into any page's own policy.
FRAME_ANCESTORS = "frame-ancestors 'none'"
#: How long a whole request body may take, in read timeouts (a slow, steady upload is fine;
#: a client trickling a byte now and then must not hold a connection for ever).
BODY_TIMEOUTS = 10


def host_name(value: str) -> str:
    """The host of a ``Host`` header or an allow-list entry: lower case, without the port, the
    brackets of an IPv6 address or a trailing dot (``"[::1]:8000"`` -> ``"::1"``)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, closed, rest = value[1:].partition("]")
        return name if closed and (not rest or rest.startswith(":")) else ""
    if value.count(":") == 1:  # name:port; more colons: a bare IPv6 address
        value = value.partition(":")[0]
    return value.rstrip(".")


def _origin_host(origin: str) -> str:
    """The host of an ``Origin`` header; "" for ``null`` (sandboxed frames, ``file:`` pages)."""
    try:
        parts = urlsplit(origin.strip())
        return (parts.hostname or "").rstrip(".") if parts.scheme in ("http", "https") else ""
    except ValueError:  # a malformed port or IPv6 address
        return ""


@dataclass(frozen=True)
class HostAllowList:
    """The host names a request may name in ``Host`` (and ``Origin``, when a browser sends it).

    ``names`` are matched exactly, ``suffixes`` (from ``*.example.com``) end a name, ``any``
    (from ``*``) turns the check off."""

    names: frozenset[str]
    suffixes: tuple[str, ...] = ()
    any: bool = False

    @classmethod
    def of(cls, extra: Iterable[str] = ()) -> HostAllowList:
        """The loopback names plus ``extra`` (host names, ``*.domain`` or ``*``); a bad entry is
        a :class:`~headstart.errors.ConfigError`."""
        names, suffixes, anything = set(LOOPBACK_HOSTS), [], False
        for entry in extra:
            text = entry.strip()
            if text == ANY_HOST:
                anything = True
            elif text.startswith("*.") and _plain(text[2:]):
                suffixes.append("." + host_name(text[2:]))
            elif _plain(text) and host_name(text):
                names.add(host_name(text))
            else:
                raise ConfigError(
                    f"allowed host {entry!r} is not a host name; give a name such as "
                    f"example.com, an address, *.example.com, or * for any"
                )
        return cls(frozenset(names), tuple(suffixes), anything)

    def allows(self, name: str) -> bool:
        """Whether the host ``name`` (as :func:`host_name` gives it) is allowed."""
        if self.any:
            return True
        return bool(name) and (name in self.names or name.endswith(self.suffixes))

    def describe(self) -> str:
        """The allowed names, for an error message."""
        if self.any:
            return ANY_HOST
        shown = [n for n in LOOPBACK_HOSTS if n in self.names]
        shown += sorted(self.names - set(LOOPBACK_HOSTS)) + [f"*{s}" for s in self.suffixes]
        return ", ".join(shown)


def _plain(text: str) -> bool:
    """A host name or address, maybe with a port: no scheme, path, space or wildcard."""
    return bool(text) and not any(c in text for c in "/@?#*\\ \t")


def serving_hosts(bind: str, extra: Iterable[str] = ()) -> list[str]:
    """The names to allow besides the loopback ones when serving on ``bind``: the bound host
    (unless a wildcard such as 0.0.0.0, which names no host), then ``extra``."""
    bound = [] if bind.strip() in _WILDCARD_BINDS else [bind.strip()]
    return [*bound, *extra]


class HostGuard:
    """ASGI middleware: refuse a request whose ``Host`` is not allowed (400), or whose
    ``Origin`` (sent by browsers on cross-origin and most POST requests) is not (403)."""

    def __init__(self, app: ASGIApp, allow: HostAllowList) -> None:
        self.app = app
        self.allow = allow

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allow.any:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        allowed = self.allow.describe()
        if not self.allow.allows(host_name(host)):
            shown = _shown(host) if host else "(none)"
            message = f"Host {shown} is not allowed here; allowed: {allowed}"
            await json_error(400, message)(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and not self.allow.allows(_origin_host(origin)):
            message = f"cross-origin request from {_shown(origin)} refused; allowed: {allowed}"
            await json_error(403, message)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _shown(value: str) -> str:
    """A client's header value, quoted and cut short, for an error message."""
    return repr(value if len(value) <= 80 else value[:80] + "...")


def security_headers() -> dict[str, str]:
    """The headers every response carries (what :class:`SecurityHeaders` adds)."""
    return {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": FRAME_ANCESTORS,
    }


class SecurityHeaders:
    """ASGI middleware: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY`` and
    ``frame-ancestors 'none'`` on every response (added to a page's own Content-Security-Policy,
    so there is one policy, not two)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["X-Content-Type-Options"] = "nosniff"
                headers["X-Frame-Options"] = "DENY"
                policy = headers.get("content-security-policy")
                if policy is None:
                    headers["Content-Security-Policy"] = FRAME_ANCESTORS
                elif "frame-ancestors" not in policy.lower():
                    merged = f"{policy.rstrip().rstrip(';')}; {FRAME_ANCESTORS}"
                    headers["Content-Security-Policy"] = merged
            await send(message)

        await self.app(scope, receive, send_secured)


class ReadTimeout:
    """ASGI middleware: each part of a request body must arrive within ``timeout_s``, and the
    whole body within :data:`BODY_TIMEOUTS` times that; a late one is answered 408 (and the
    connection closed), so a stalled client does not hold it for ever."""

    def __init__(self, app: ASGIApp, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BODY_TIMEOUTS * self.timeout_s
        done = False

        async def timed() -> Message:
            nonlocal done
            if done:  # the body is in; what comes now is a disconnect, whenever it happens
                return await receive()
            left = deadline - loop.time()
            try:
                message = await asyncio.wait_for(receive(), max(min(self.timeout_s, left), 0.0))
            except asyncio.TimeoutError:
                # the client is still there, but its body is not coming: say so, then hang up
                if left <= self.timeout_s:
                    why = f"took longer than the limit of {BODY_TIMEOUTS * self.timeout_s:g} s"
                else:
                    why = f"stalled for longer than the timeout of {self.timeout_s:g} s"
                close = {"Connection": "close"}
                raise ApiError(408, f"the request body {why}", headers=close) from None
            done = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        await self.app(scope, timed, send)
