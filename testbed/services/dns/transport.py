"""DNS over UDP (RFC 1035, EDNS0 truncation) and TCP (RFC 7766: length prefix, connection and
per-connection query limits) for :class:`MappingDns`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections import Counter

from testbed.services.dns.answers import MappingDns
from testbed.services.dns.config import (
    DnsConfig,
)
from testbed.services.health import HealthChecker
from testbed.services.mcast.consumer import ControlFeed

log = logging.getLogger("testbed.services.dns")


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, dns: MappingDns) -> None:
        self.dns = dns
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
                except OSError:
                    pass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.dns.stats["udp"] += 1
        out = self.dns.handle(data, addr[0], False)
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


#: seconds a TCP connection closed by the server after its last answer waits for the client to close
TCP_LINGER_S = 2.0


async def linger_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close after the last answer (FIN), then read and throw away what the client still sends until it
    closes or :data:`TCP_LINGER_S` pass: closing with unread queries would send a RST, which can destroy the
    last answer before the client has read it."""
    if writer.can_write_eof():
        writer.write_eof()
    try:
        async with asyncio.timeout(TCP_LINGER_S):
            while await reader.read(4096):
                pass
    except (TimeoutError, ConnectionError):
        pass


class DnsServer:
    """UDP + TCP listeners around :class:`MappingDns`, with the health checker (tests use this directly)."""

    def __init__(self, cfg: DnsConfig) -> None:
        self.cfg = cfg
        self.health = HealthChecker(
            cfg.mapping.edges if cfg.mapped else [], cfg.health, admin_token=cfg.admin_token
        )
        self.dns = MappingDns(cfg, self.health)
        edges = cfg.mapping.edges if cfg.mapped else []
        self.control = ControlFeed(cfg.control, edges, self.health) if cfg.control and edges else None
        self.port = cfg.port
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.base_events.Server | None = None
        self._tcp_open = 0  # TCP connections being served (at most cfg.tcp_max_connections)

    @property
    def stats(self) -> Counter[str]:
        return self.dns.stats

    async def start(self) -> None:
        """Health warm-up first (no answer before it), then bind UDP and TCP on the same port."""
        await self.health.start()
        if self.control is not None:
            await self.control.start()
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(
            lambda: UdpProtocol(self.dns), local_addr=(self.cfg.host, self.cfg.port)
        )
        self.port = self._udp.get_extra_info("sockname")[1]
        if self.cfg.tcp:
            self._tcp = await asyncio.start_server(self._tcp_client, self.cfg.host, self.port)
        log.info("DNS listening on %s:%d (udp%s)", self.cfg.host, self.port, "+tcp" if self.cfg.tcp else "")

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._tcp_open >= self.cfg.tcp_max_connections:
            self.dns.stats["tcp_refused_connections"] += 1  # RFC 7766 §6.2.2: close it at once
            writer.close()
            return
        src = writer.get_extra_info("peername")[0]
        self._tcp_open += 1
        answered = 0
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), self.cfg.tcp_idle_timeout)
                    (n,) = struct.unpack("!H", head)
                    data = await asyncio.wait_for(reader.readexactly(n), self.cfg.tcp_idle_timeout)
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                self.dns.stats["tcp"] += 1
                out = self.dns.handle(data, src, True)
                if out is None:
                    return  # unreadable: close the connection (RFC 7766 §6.2.4 allows it)
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
                answered += 1
                if answered >= self.cfg.tcp_max_queries_per_connection:
                    self.dns.stats["tcp_query_limit_closes"] += 1
                    await linger_close(reader, writer)
                    return
        finally:
            self._tcp_open -= 1
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        if self.control is not None:
            await self.control.stop()
        await self.health.stop()
