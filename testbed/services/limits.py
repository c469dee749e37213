"""Limits that keep an HTTP service alive: concurrent connections and the size of request header sections.

The edge and the redirector take their limits from :class:`HttpLimitsConfig` and listen through a
:class:`LimitedSite` instead of aiohttp's ``TCPSite``:

* ``max_connections``: client connections open at once. One more is answered at once with a complete
  ``HTTP/1.1 503 Service Unavailable`` (RFC 9110 §15.6.4) carrying ``Retry-After`` (§10.2.3) and
  ``Connection: close``, and closed; the connections already open are served as before. The refusal
  half-closes the connection and reads (and discards) what the client still sends until it closes or
  :data:`LINGER_S` pass, so that no RST destroys the 503 before the client has read it (RFC 9112 §9.6).
* ``max_header_count`` and ``max_header_bytes``: header fields in one request, and bytes of its header
  section (every field line counted as ``name: value`` CRLF; the request line has its own limit). Over
  either, the request is answered ``431 Request Header Fields Too Large`` (RFC 6585 §5) without reaching
  the service, and that connection is closed; the service keeps serving every other.

* ``header_timeout_s``: a client must send a whole request header section within this many seconds of
  its first byte (or of opening the connection). Slower, it gets ``408 Request Timeout`` (RFC 9110
  §15.5.9) and the connection is closed; a connection that sent nothing is closed silently. Without it,
  clients that open connections and send headers a byte at a time ("slowloris") would hold every
  ``max_connections`` slot. Idle keep-alive connections between requests are closed after
  ``keepalive_timeout_s``.

What aiohttp does by itself: its parser has a hard limit on the number of fields (``max_headers``) and on
the size of the request line and of one field (``max_line_size``, ``max_field_size``), and answers
``400 Bad Request`` past them. Here its field-count limit is set just above ``max_header_count`` (so that
either of aiohttp's parsers lets exactly ``max_header_count`` fields through, and the parser never holds
many more than that), our check in front of the service's handler answers 431, and the parser's own
"too many headers" error is turned into the same 431. One field or a request line longer than the
parser's size limits still gets aiohttp's 400 (the edge's ``max_field_size``). aiohttp has no limit on
connections and none on the total size of a header section.

Every refusal is counted in the service's counters (``refused_connections``, ``refused_headers``,
``timed_out_headers``), which
its stats endpoint reports. The file-descriptor limit of the process is raised (within its hard limit) so
that ``max_connections`` connections fit next to the service's own sockets: otherwise the kernel's
``EMFILE`` on ``accept`` would stop the service first, with no answer at all.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from itertools import chain
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from pydantic import Field

from testbed.services.base import ServiceConfig
from testbed.services.hit_path import HitFn, HitPathProtocol

log = logging.getLogger(__name__)

#: seconds a refused connection is kept half-closed for the client to read its 503 (then it is closed)
LINGER_S = 2.0
#: bytes a refused connection may still send while it lingers; more and it is aborted
LINGER_BYTES = 64 * 1024
#: refused connections lingering at once; beyond, a refusal closes at once after its 503
MAX_LINGERING = 256
#: ``Retry-After`` (seconds) of the 503 sent to a connection over ``max_connections``
RETRY_AFTER_S = 1
#: file descriptors kept for the service's own sockets and files on top of ``max_connections``
FD_RESERVE = 512
#: how aiohttp's parsers say a request has more fields than their ``max_headers`` (both parsers)
_TOO_MANY_FIELDS = "Too many headers"

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


class HttpLimitsConfig(ServiceConfig):
    """The limits every cdnlab HTTP service (edge, redirector) keeps so that it stays alive under load."""

    #: client connections open at once; one more gets a complete ``503 Service Unavailable`` with
    #: ``Retry-After`` and ``Connection: close`` and is closed (the open ones are served as before)
    max_connections: int = Field(1024, ge=1, le=1_000_000)
    #: header fields in one request; more: ``431 Request Header Fields Too Large`` (RFC 6585 §5)
    max_header_count: int = Field(100, ge=1, le=1000)
    #: bytes of one request's header section, each field line counted as ``name: value`` CRLF; more: 431
    max_header_bytes: int = Field(32768, ge=1024, le=1 << 20)
    #: seconds a client has to send a whole request header section, from its first byte (or from the
    #: connection's start, for a new connection): slower, ``408 Request Timeout`` and the connection
    #: closed (a connection that sent nothing is closed silently). nginx's ``client_header_timeout``
    header_timeout_s: float = Field(10.0, ge=0.05, le=3600)
    #: seconds an idle keep-alive connection is kept between requests (aiohttp's and nginx's default)
    keepalive_timeout_s: float = Field(75.0, ge=0.05, le=3600)

    def parser_limits(self) -> dict[str, Any]:
        """aiohttp's own limits, for ``web.Server``/``web.AppRunner``: the field-count limit two above
        ``max_header_count``, since aiohttp's pure-Python parser counts the request line and the empty
        line too (past it aiohttp's "too many headers" error is answered 431, :class:`HttpGate`), and the
        idle keep-alive timeout."""
        return {"max_headers": self.max_header_count + 2, "keepalive_timeout": self.keepalive_timeout_s}


def header_section_bytes(raw_headers: tuple[tuple[bytes, bytes], ...]) -> int:
    """Bytes of a header section as ``name: value`` CRLF per field line (RFC 9112 §5)."""
    return len(b"".join(chain.from_iterable(raw_headers))) + 4 * len(raw_headers)


def _refusal_503() -> bytes:
    body = b"service unavailable: too many connections, retry later\n"
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {RETRY_AFTER_S}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


class _Refusal(asyncio.Protocol):
    """A connection over ``max_connections``: the 503, a half-close, and whatever arrives thrown away until
    the client closes (or :data:`LINGER_S`), so the answer is not lost to a RST."""

    def __init__(self, gate: HttpGate) -> None:
        self.gate = gate
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._discarded = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t: asyncio.Transport = transport  # type: ignore[assignment]
        self.transport = t
        t.write(_refusal_503())
        if len(self.gate.refusals) >= MAX_LINGERING or not t.can_write_eof():
            t.close()  # too many lingering already: close now (the 503 is flushed first)
            return
        self.gate.refusals.add(self)
        t.write_eof()
        self._timer = asyncio.get_running_loop().call_later(LINGER_S, t.close)

    def data_received(self, data: bytes) -> None:
        self._discarded += len(data)
        if self._discarded > LINGER_BYTES and self.transport is not None:
            self.transport.abort()

    def eof_received(self) -> bool:
        return False  # the client is done: the transport closes

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.gate.refusals.discard(self)
        self.transport = None


class _GuardedHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, counted by its :class:`HttpGate`, with the header check in front
    of the service's handler and the parser's "too many headers" answered 431 instead of 400."""

    __slots__ = ("_gate", "_counted", "_header_timer", "_in_request", "_got_bytes")

    def __init__(self, manager: web.Server, *, gate: HttpGate, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._gate = gate
        self._counted = False
        self._request_handler = gate.handler
        self._header_timer: asyncio.TimerHandle | None = None
        self._in_request = 0  # requests whose header section arrived and that are being handled
        self._got_bytes = False  # bytes of a request's header section arrived since the timer was armed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._gate
        if gate.active >= gate.limits.max_connections:
            gate.refuse(transport)  # this protocol object is dropped unused
            return
        gate.active += 1
        self._counted = True
        super().connection_made(transport)
        self._arm()  # a new connection must send a request within header_timeout_s

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and not self._in_request:
            self._arm()  # the first byte of the next request on a kept-alive connection
        self._got_bytes = True
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self._gate.active -= 1
        super().connection_lost(exc)

    # -- the header timeout (slow clients must not hold a connection slot: "slowloris") ------------------
    def _arm(self) -> None:
        self._disarm()
        self._got_bytes = False
        self._header_timer = asyncio.get_running_loop().call_later(
            self._gate.limits.header_timeout_s, self._header_timed_out
        )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def request_started(self) -> None:
        """Called by the gate's handler wrapper: a whole header section arrived."""
        self._disarm()
        self._in_request += 1

    def request_done(self) -> None:
        self._in_request = max(0, self._in_request - 1)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        t = self.transport
        if self._in_request or t is None or t.is_closing():
            return
        self._gate.header_timed_out(t, self._got_bytes)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status == 400 and isinstance(exc, BadHttpMessage) and _TOO_MANY_FIELDS in str(exc):
            return self._gate.too_large(f"more than {self._gate.limits.max_header_count} header fields")
        return super().handle_error(request, status, exc, message)


class HttpGate:
    """The protocol factory of one listening socket: aiohttp's handlers, counted against
    ``max_connections``, with requests checked against ``max_header_count`` and ``max_header_bytes``
    before they reach ``server``'s handler. Refusals are counted in ``counters``."""

    def __init__(
        self, server: web.Server, limits: HttpLimitsConfig, counters: Counter[str], hit: HitFn | None = None
    ) -> None:
        self.server = server
        #: a fast path for plain hits (:mod:`testbed.services.hit_path`): connections start there
        self.hit = hit
        self.fast: set[HitPathProtocol] = set()  # connections on the fast path (closed with the gate)
        self.limits = limits
        self.counters = counters
        self.active = 0  # connections being served
        self.refusals: set[_Refusal] = set()  # refused connections still lingering
        self.handler = self._checked(server.request_handler)
        # what web.Server.__call__ passes to each web.RequestHandler (access log, parser limits, ...)
        self._handler_kwargs: dict[str, Any] = dict(getattr(server, "_kwargs", {}))
        self._logged = 0.0

    def __call__(self) -> asyncio.Protocol:
        if self.hit is not None:
            return HitPathProtocol(self, self.hit)
        return self.full_handler()

    def full_handler(self) -> web.RequestHandler:
        """aiohttp's handler for one connection, guarded by this gate (not yet connected)."""
        return _GuardedHandler(
            self.server, gate=self, loop=asyncio.get_running_loop(), **self._handler_kwargs
        )

    def _checked(self, handler: Handler) -> Handler:
        count, size = self.limits.max_header_count, self.limits.max_header_bytes
        too_large = self.too_large

        async def checked(request: web.BaseRequest) -> web.StreamResponse:
            proto = request.protocol
            guarded = isinstance(proto, _GuardedHandler)
            if guarded:
                proto.request_started()
            try:
                raw = request.raw_headers
                if len(raw) > count:
                    return too_large(f"{len(raw)} header fields, at most {count}")
                n = header_section_bytes(raw)
                if n > size:
                    return too_large(f"{n} bytes of header fields, at most {size}")
                return await handler(request)
            finally:
                if guarded:
                    proto.request_done()

        return checked

    def too_large(self, why: str) -> web.Response:
        """The 431 of RFC 6585 §5 (never stored: ``no-store``); the connection is closed after it."""
        self.counters["refused_headers"] += 1
        self._log("431 to a request: %s", why)
        resp = web.Response(
            status=431,
            text=f"request header fields too large: {why}\n",
            headers={"Cache-Control": "no-store", "Connection": "close"},
        )
        resp.force_close()
        return resp

    def header_timed_out(self, transport: asyncio.Transport, got_bytes: bool) -> None:
        """A client took longer than ``header_timeout_s`` to send a request's header section: ``408
        Request Timeout`` (RFC 9110 §15.5.9) with ``Connection: close`` when it had started one, then the
        connection is closed; its slot is free again."""
        self.counters["timed_out_headers"] += 1
        self._log("closed a connection that sent no whole request header in %.1f s", self.limits.header_timeout_s)
        if got_bytes:
            body = b"request timeout: the request header section did not arrive in time\n"
            transport.write(
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        transport.close()

    def refuse(self, transport: asyncio.BaseTransport) -> None:
        """Answer a connection over ``max_connections`` with a 503 and close it (:class:`_Refusal`)."""
        self.counters["refused_connections"] += 1
        self._log(
            "503 to a new connection: %d open, max_connections %d", self.active, self.limits.max_connections
        )
        refusal = _Refusal(self)
        transport.set_protocol(refusal)
        refusal.connection_made(transport)

    def close(self) -> None:
        """Close the refused connections still lingering, and the connections still on the hit fast path
        (aiohttp closes its own), when the service stops."""
        for r in list(self.refusals):
            if r.transport is not None:
                r.transport.abort()
        self.refusals.clear()
        for p in list(self.fast):
            p.close()
        self.fast.clear()

    def _log(self, msg: str, *args: Any) -> None:
        now = time.monotonic()  # at most one line in 10 s: a flood must not flood the log too
        if now - self._logged >= 10:
            self._logged = now
            log.warning(
                msg + " (refused so far: %d connections, %d requests, %d slow headers)",
                *args,
                self.counters["refused_connections"],
                self.counters["refused_headers"],
                self.counters["timed_out_headers"],
            )


def ensure_fd_headroom(connections: int) -> None:
    """Raise the soft ``RLIMIT_NOFILE`` (within the hard one) to ``connections`` + :data:`FD_RESERVE`, so
    that the connection limit, not ``EMFILE`` on ``accept``, is what a flood of connections runs into."""
    want = connections + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return
    new = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if new > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError) as e:
            log.warning("cannot raise the file-descriptor limit from %d to %d: %s", soft, new, e)
            new = soft
    if new < want:
        log.warning(
            "max_connections %d needs about %d file descriptors, the limit is %d: accept() may fail first",
            connections,
            want,
            new,
        )


class LimitedSite(web.TCPSite):
    """aiohttp's ``TCPSite``, listening through an :class:`HttpGate` (``.gate`` once started)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int | None,
        *,
        limits: HttpLimitsConfig,
        counters: Counter[str],
        hit: HitFn | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(runner, host, port, **kwargs)
        self.limits = limits
        self.counters = counters
        self.hit = hit
        self.gate: HttpGate | None = None

    async def start(self) -> None:
        server = self._runner.server
        assert server is not None, "runner.setup() first"
        self.gate = HttpGate(server, self.limits, self.counters, self.hit)
        ensure_fd_headroom(self.limits.max_connections)
        # what TCPSite.start does, with the gate as the protocol factory
        await web.BaseSite.start(self)  # registers the site with its runner, which stops it on cleanup
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.gate,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )
        if self._server.sockets:
            self._bound_port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        await super().stop()
        if self.gate is not None:
            self.gate.close()


__all__ = ["HttpGate", "HttpLimitsConfig", "LimitedSite", "ensure_fd_headroom", "header_section_bytes"]
