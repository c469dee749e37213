"""The edge's cache-hit fast path, below aiohttp (#12's moonshot).

A connection starts on :class:`HitPathProtocol`, a bare ``asyncio.Protocol``. While each chunk the client
sends is exactly one small, plain ``GET ... HTTP/1.1`` header section (no body, nothing pipelined behind
it), it asks the service's ``hit`` callback for a whole prebuilt response and writes it: no request object,
no task, no header dictionary. The callback answers only what the full path would answer the same way (for
the edge: a fresh stored 200 with nothing conditional in the request, :meth:`testbed.services.edge.Edge.fast_hit`);
anything else (``None``) hands the connection, with the bytes received, to aiohttp's handler
(:class:`testbed.services.limits.HttpGate`'s), which keeps it from then on. So a malformed request, a
miss, a revalidation, a Range, a pipelined burst or HTTP/1.0 gets exactly what it got before, from the
full path (RFC 9112 framing, 400s, limits).

The protocol keeps the gate's limits: it is counted against ``max_connections`` (refused with the gate's
503 when over), a request's header section must arrive within ``header_timeout_s`` (else the gate's 408),
an idle kept-alive connection is closed after ``keepalive_timeout_s`` (as aiohttp does), and it stops
reading while the transport's write buffer is over its high-water mark.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from testbed.services.limits import HttpGate

#: the service's answer to a plain GET: ``hit(target, header_names)`` -> the whole response, or None to
#: leave the request to the full path (``header_names``: the request's field names, lower case)
HitFn = Callable[[str, frozenset[bytes]], bytes | None]

#: the largest header section the fast path reads itself (a bigger one goes to aiohttp and its limits)
MAX_FAST_HEAD = 4096
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")  # a field name (RFC 9110 §5.1)
_END = b"\r\n\r\n"
_PREFIX, _SUFFIX = b"GET ", b" HTTP/1.1"
#: what :func:`plain_get` made of each distinct request seen lately (whole request bytes -> result)
_PARSED: dict[bytes, tuple[str, frozenset[bytes], int] | None] = {}
_PARSED_MAX, _PARSED_HEAD = 4096, 512  # at most 2 MiB of requests remembered
_UNSEEN: Any = object()


def plain_get(head: bytes) -> tuple[str, frozenset[bytes], int] | None:
    """``(target, field names in lower case, number of fields)`` of a header section (without its final CRLF CRLF) that is a
    well-formed ``GET`` in origin form over HTTP/1.1 with exactly one ``Host``; None for anything else
    (which the full path then parses and judges)."""
    line_end = head.find(b"\r\n")
    if line_end < 0 or not head.startswith(_PREFIX):
        return None
    line = head[:line_end]
    if not line.endswith(_SUFFIX):
        return None
    target = line[4:-9]
    if not target.startswith(b"/") or b" " in target or not target.isascii():
        return None
    fields = head[line_end + 2 :]
    crlf = fields.count(b"\r\n")
    if fields.count(b"\r") != crlf or fields.count(b"\n") != crlf or b"\x00" in head:
        return None  # a bare CR or LF, or NUL: the full parser's call
    names = []
    hosts = 0
    for field in fields.split(b"\r\n"):
        name, sep, _ = field.partition(b":")
        if not sep or _TOKEN.match(name) is None:
            return None  # obs-fold, no colon, whitespace before the colon, or not a token
        name = name.lower()
        hosts += name == b"host"
        names.append(name)
    if hosts != 1:
        return None
    return target.decode("ascii"), frozenset(names), len(names)


class HitPathProtocol(asyncio.Protocol):
    """One client connection on the fast path until its first request that is not a fast hit."""

    __slots__ = (
        "_buf",
        "_counted",
        "_gate",
        "_header_timer",
        "_hit",
        "_idle_timer",
        "_last",
        "_loop",
        "_max_head",
        "_paused",
        "transport",
    )

    def __init__(self, gate: HttpGate, hit: HitFn) -> None:
        self._gate = gate
        self._hit = hit
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self._buf = b""
        self._counted = False
        self._paused = False  # the transport's write buffer is over its high-water mark
        self._header_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._last = 0.0  # when the last fast response was written (the keep-alive clock)
        # no line longer than the service's own line limit (the edge's max_field_size), no section over the
        # gate's max_header_bytes, is read here
        self._max_head = min(
            MAX_FAST_HEAD, gate.limits.max_header_bytes, getattr(gate.limits, "max_field_size", MAX_FAST_HEAD)
        )

    # -- asyncio.Protocol ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        gate = self._gate
        if gate.active >= gate.limits.max_connections:
            gate.refuse(transport)  # the gate's 503; this protocol is dropped unused
            return
        gate.active += 1
        self._counted = True
        gate.fast.add(self)
        self.transport = transport  # type: ignore[assignment]
        self._arm_header_timer()  # a new connection must send a request within header_timeout_s

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        end = buf.find(_END)
        if end < 0:  # the header section is not all here yet
            if len(buf) > self._max_head:
                self._hand_off(buf)
                return
            self._buf = buf
            if self._header_timer is None:
                self._arm_header_timer()
            return
        # a body or pipelined requests (the full parser's), or over the gate's limits (or near: its 431)
        if end + 4 != len(buf) or end > self._max_head:
            self._hand_off(buf)
            return
        req = _PARSED.get(buf, _UNSEEN)
        if req is _UNSEEN:  # clients repeat their requests: each distinct small one is parsed once
            req = plain_get(buf[:end])
            if end <= _PARSED_HEAD:
                if len(_PARSED) >= _PARSED_MAX:
                    _PARSED.clear()
                _PARSED[buf] = req
        resp = None
        if req is not None and req[2] <= self._gate.limits.max_header_count:
            resp = self._hit(req[0], req[1])
        if resp is None:
            self._hand_off(buf)
            return
        self._buf = b""
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        assert self.transport is not None
        self.transport.write(resp)
        self._last = self._loop.time()
        if self._idle_timer is None:
            self._idle_timer = self._loop.call_at(
                self._last + self._gate.limits.keepalive_timeout_s, self._idle_check
            )

    def eof_received(self) -> bool | None:
        return None  # the client is done sending: close (as aiohttp does)

    def pause_writing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()  # no more requests until the client reads its answers

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None:
            self.transport.resume_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_timers()
        self._gate.fast.discard(self)
        self.transport = None
        if self._counted:
            self._counted = False
            self._gate.active -= 1

    # -- the rest ------------------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (the service is stopping)."""
        if self.transport is not None:
            self.transport.close()

    def _hand_off(self, data: bytes) -> None:
        """Give the connection, and ``data``, to aiohttp's handler for good."""
        t = self.transport
        assert t is not None
        self._stop_timers()
        self._gate.fast.discard(self)
        self.transport = None
        self._buf = b""
        if self._counted:  # the handler counts itself in
            self._counted = False
            self._gate.active -= 1
        handler: Any = self._gate.full_handler()
        t.set_protocol(handler)
        handler.connection_made(t)
        if self._paused:
            t.resume_reading()
            handler.pause_writing()  # it learns of the full buffer; resume_writing now goes to it
        handler.data_received(data)

    def _arm_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._gate.limits.header_timeout_s, self._header_timed_out)

    def _header_timed_out(self) -> None:
        self._header_timer = None
        t = self.transport
        if t is not None and not t.is_closing():
            self._gate.header_timed_out(t, bool(self._buf))

    def _idle_check(self) -> None:
        """aiohttp's keep-alive timeout: close a connection idle that long (reschedule if it was not)."""
        self._idle_timer = None
        t = self.transport
        if t is None or t.is_closing():
            return
        due = self._last + self._gate.limits.keepalive_timeout_s
        if self._buf or self._header_timer is not None:
            due = self._loop.time() + self._gate.limits.keepalive_timeout_s  # a request is under way
        if self._loop.time() >= due:
            t.close()
        else:
            self._idle_timer = self._loop.call_at(due, self._idle_check)

    def _stop_timers(self) -> None:
        for timer in (self._header_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._idle_timer = None
