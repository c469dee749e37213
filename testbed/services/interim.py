"""Interim (1xx) responses relayed by the edge, as they arrive, and never cached (RFC 9110 §15.2, RFC 8297).

aiohttp's client reads and drops informational responses before the final one, and its server has no way
to send one. So the edge's upstream session uses :class:`InterimAwareResponse`, which reports each 1xx it
reads (102 Processing, 103 Early Hints, ...) to the :data:`SINK` of the request being served, and
:class:`InterimRelay` writes it to that client's connection before the final response's head. Not relayed:
``100 Continue`` (an answer to the edge's own request; aiohttp answers the client's ``Expect``) and ``101``
(an upgrade, which ends HTTP); nothing to an HTTP/1.0 client, which cannot take one (§15.2); nothing once
the request's handler has returned (a background revalidation's 1xx has no client to go to). Hop-by-hop
fields, and those named in ``Connection``, are removed as from any forwarded message (§7.6.1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.http import HttpVersion11

from testbed.services.http_fields import HOP_BY_HOP

#: ``sink(status, reason, raw_headers)`` for the 1xx responses of the upstream fetches made while serving
#: one client request (set by the edge's handler; None: dropped, as aiohttp does)
SINK: ContextVar[Callable[[int, str, tuple[tuple[bytes, bytes], ...]], None] | None] = ContextVar(
    "interim_sink", default=None
)

#: not relayed with an interim response: hop-by-hop fields, and a length (1xx has no body)
_HOP_BY_HOP = frozenset(f.encode() for f in HOP_BY_HOP | {"content-length"})


class InterimAwareResponse(aiohttp.ClientResponse):
    """aiohttp's client response, which also hands each informational response it reads to :data:`SINK`."""

    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        sink = SINK.get()
        proto = connection.protocol
        if sink is None or proto is None:
            return await super().start(connection)
        read: Callable[[], Awaitable[Any]] = proto.read

        async def read_relaying() -> Any:
            message, payload = await read()
            if 102 <= message.code <= 199:
                sink(message.code, message.reason, tuple(message.raw_headers))
            return message, payload

        proto.read = read_relaying  # this response's reads only: removed below
        try:
            return await super().start(connection)
        finally:
            proto.__dict__.pop("read", None)


class InterimRelay:
    """The :data:`SINK` of one client request: writes each 1xx to its connection until :meth:`close`."""

    __slots__ = ("_counters", "_open", "_request")

    def __init__(self, request: web.BaseRequest, counters: Counter[str]) -> None:
        self._request = request
        self._counters = counters
        self._open = request.version >= HttpVersion11

    def __call__(self, status: int, reason: str, raw_headers: tuple[tuple[bytes, bytes], ...]) -> None:
        t = self._request.transport
        if not self._open or t is None or t.is_closing():
            return
        named = {
            n.strip().lower()
            for k, v in raw_headers
            if k.lower() == b"connection"
            for n in v.split(b",")
        }
        lines = [b"HTTP/1.1 %d %s" % (status, (reason or "").encode("latin-1", "replace"))]
        lines += [k + b": " + v for k, v in raw_headers if k.lower() not in _HOP_BY_HOP and k.lower() not in named]
        t.write(b"\r\n".join(lines) + b"\r\n\r\n")
        self._counters["interim_relayed"] += 1

    def close(self) -> None:
        """The handler returned: its final response follows; nothing more goes before it."""
        self._open = False
