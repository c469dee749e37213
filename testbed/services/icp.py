"""Internet Cache Protocol version 2 (RFC 2186; its use in hierarchies: RFC 2187).

Lecture slide 7: on a local miss, a cache asks its *siblings* over UDP with a short timeout whether they
hold the object, and fetches it over HTTP from one that answers ``ICP_OP_HIT``.

Wire format (RFC 2186 §2), all integers in network byte order::

    opcode(8) version(8) message-length(16)
    request-number(32)
    options(32)
    option-data(32)
    sender-host-address(32)
    payload: ICP_OP_QUERY: requester-host-address(32) URL NUL;  other opcodes: URL NUL

:class:`IcpServer` answers queries from a lookup callback (the edge's store); malformed datagrams are
ignored and counted, never fatal. :class:`IcpClient` queries several siblings at once and returns the
first that answers HIT, or None after the timeout.
"""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import logging
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger(__name__)

ICP_VERSION = 2
HEADER = struct.Struct("!BBHIIII")  # 20 bytes
MAX_MESSAGE = 16384  # RFC 2186 §2: the maximum ICP message size


class Op(enum.IntEnum):
    """ICP opcodes (RFC 2186 §2.1)."""

    INVALID = 0
    QUERY = 1
    HIT = 2
    MISS = 3
    ERR = 4
    SECHO = 10
    DECHO = 11
    MISS_NOFETCH = 21
    DENIED = 22
    HIT_OBJ = 23


ICP_OP_QUERY, ICP_OP_HIT, ICP_OP_MISS, ICP_OP_ERR = Op.QUERY, Op.HIT, Op.MISS, Op.ERR
ICP_OP_MISS_NOFETCH, ICP_OP_DENIED, ICP_OP_HIT_OBJ = Op.MISS_NOFETCH, Op.DENIED, Op.HIT_OBJ


class IcpDecodeError(ValueError):
    """A datagram that is not a well-formed ICPv2 message."""


def _ip_int(addr: str) -> int:
    try:
        return int(ipaddress.IPv4Address(addr))
    except ValueError:
        return 0


@dataclass
class IcpMessage:
    opcode: Op
    reqnum: int
    url: str
    options: int = 0
    option_data: int = 0
    sender: int = 0  # sender host address as an integer (RFC 2186: may be 0)
    requester: int = 0  # only in ICP_OP_QUERY
    version: int = ICP_VERSION

    def encode(self) -> bytes:
        payload = self.url.encode() + b"\x00"
        if self.opcode == Op.QUERY:
            payload = struct.pack("!I", self.requester) + payload
        length = HEADER.size + len(payload)
        if length > MAX_MESSAGE:
            raise ValueError(f"ICP message of {length} bytes exceeds {MAX_MESSAGE}")
        head = HEADER.pack(
            int(self.opcode), self.version, length, self.reqnum, self.options, self.option_data, self.sender
        )
        return head + payload

    @classmethod
    def decode(cls, data: bytes) -> IcpMessage:
        """Parse one datagram; raise :class:`IcpDecodeError` naming what is wrong."""
        if len(data) < HEADER.size:
            raise IcpDecodeError(f"truncated: {len(data)} bytes, the header alone is {HEADER.size}")
        opcode, version, length, reqnum, options, option_data, sender = HEADER.unpack_from(data)
        if version != ICP_VERSION:
            raise IcpDecodeError(f"version {version}, expected {ICP_VERSION}")
        if length != len(data):
            raise IcpDecodeError(f"message length field {length} but datagram has {len(data)} bytes")
        try:
            op = Op(opcode)
        except ValueError:
            raise IcpDecodeError(f"unknown opcode {opcode}") from None
        payload = data[HEADER.size :]
        requester = 0
        if op == Op.QUERY:
            if len(payload) < 5:
                raise IcpDecodeError("query payload too short")
            (requester,) = struct.unpack_from("!I", payload)
            payload = payload[4:]
        nul = payload.find(b"\x00")
        if nul < 0:
            raise IcpDecodeError("URL is not NUL-terminated")
        try:
            url = payload[:nul].decode("ascii")
        except UnicodeDecodeError:
            raise IcpDecodeError("URL is not ASCII") from None
        return cls(op, reqnum, url, options, option_data, sender, requester, version)


class IcpServer(asyncio.DatagramProtocol):
    """Answers ICP queries: HIT when ``lookup(url)`` is true, else MISS (or MISS_NOFETCH when
    ``nofetch()`` says this cache would rather not fetch now). Counts what it sees."""

    def __init__(
        self,
        lookup: Callable[[str], bool],
        nofetch: Callable[[], bool] | None = None,
        sender_addr: str = "0.0.0.0",
    ) -> None:
        self.lookup = lookup
        self.nofetch = nofetch
        self.sender = _ip_int(sender_addr)
        self.transport: asyncio.DatagramTransport | None = None
        self.queries_received = 0
        self.hits_sent = 0
        self.misses_sent = 0
        self.invalid_received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = IcpMessage.decode(data)
        except IcpDecodeError as e:
            self.invalid_received += 1
            log.debug("ignoring bad ICP datagram from %s: %s", addr, e)
            return
        if msg.opcode != Op.QUERY:
            self.invalid_received += 1  # a server only expects queries
            return
        self.queries_received += 1
        try:
            hit = bool(self.lookup(msg.url))
            op = Op.HIT if hit else (Op.MISS_NOFETCH if self.nofetch and self.nofetch() else Op.MISS)
        except Exception:  # noqa: BLE001 - a lookup failure must not kill the server
            log.exception("ICP lookup failed for %r", msg.url)
            op = Op.ERR
        if op == Op.HIT:
            self.hits_sent += 1
        else:
            self.misses_sent += 1
        reply = IcpMessage(op, msg.reqnum, msg.url, sender=self.sender)
        if self.transport is not None:
            self.transport.sendto(reply.encode(), addr)

    def stats(self) -> dict[str, int]:
        return {
            "queries_received": self.queries_received,
            "hits_sent": self.hits_sent,
            "misses_sent": self.misses_sent,
            "invalid_received": self.invalid_received,
        }


async def start_server(
    lookup: Callable[[str], bool],
    host: str = "127.0.0.1",
    port: int = 0,
    nofetch: Callable[[], bool] | None = None,
) -> tuple[asyncio.DatagramTransport, IcpServer]:
    """Bind an :class:`IcpServer` on host:port (0 = any free port; read it from the transport)."""
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: IcpServer(lookup, nofetch, host), local_addr=(host, port)
    )
    return transport, proto  # type: ignore[return-value]


class IcpClient(asyncio.DatagramProtocol):
    """Sends ICP queries from one UDP socket and matches replies by request number."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self._reqnum = 0
        self._pending: dict[int, tuple[asyncio.Future[tuple[str, int]], set[tuple[str, int]], str]] = {}
        self.queries_sent = 0
        self.replies_received = 0
        self.invalid_received = 0
        self.timeouts = 0

    @classmethod
    async def create(cls, host: str = "127.0.0.1") -> IcpClient:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_datagram_endpoint(cls, local_addr=(host, 0))
        return proto  # type: ignore[return-value]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = IcpMessage.decode(data)
        except IcpDecodeError:
            self.invalid_received += 1
            return
        pending = self._pending.get(msg.reqnum)
        if pending is None or msg.url != pending[2]:
            self.invalid_received += 1  # late, unsolicited or mismatched reply
            return
        self.replies_received += 1
        fut, waiting, _ = pending
        waiting.discard(addr)
        if msg.opcode in (Op.HIT, Op.HIT_OBJ):
            if not fut.done():
                fut.set_result(addr)
        elif not waiting and not fut.done():
            fut.set_exception(LookupError("all siblings missed"))

    async def query(
        self, url: str, peers: Sequence[tuple[str, int]], timeout: float
    ) -> tuple[str, int] | None:
        """Ask every peer for ``url``; return the (host, port) of the first HIT, or None."""
        if not peers or self.transport is None:
            return None
        self._reqnum = (self._reqnum + 1) & 0xFFFFFFFF
        reqnum = self._reqnum
        fut: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
        self._pending[reqnum] = (fut, set(peers), url)
        data = IcpMessage(Op.QUERY, reqnum, url).encode()
        try:
            for p in peers:
                self.transport.sendto(data, p)
                self.queries_sent += 1
            try:
                return await asyncio.wait_for(fut, timeout)
            except TimeoutError:
                self.timeouts += 1
                return None
            except LookupError:
                return None
        finally:
            self._pending.pop(reqnum, None)

    def stats(self) -> dict[str, int]:
        return {
            "queries_sent": self.queries_sent,
            "replies_received": self.replies_received,
            "invalid_replies": self.invalid_received,
            "timeouts": self.timeouts,
        }
