"""UDP multicast sockets and the asyncio driver shared by the multicast sender, receiver and control channel.

The protocol engines (:class:`~testbed.services.mcast.sender.IngestSender`,
:class:`~testbed.services.mcast.receiver.IngestReceiver`) are sans-I/O: they take datagrams through
``datagram_received`` and hand datagrams to a ``transmit`` callable, and ``poll()`` runs their timers
and returns the next deadline. :class:`EndpointRunner` drives one such engine from a real socket;
:mod:`testbed.services.mcast.simnet` drives them from a simulated lossy network instead.

Sockets follow RFC 1112 host behaviour as Linux exposes it: ``IP_ADD_MEMBERSHIP`` on the configured
interface address, ``IP_MULTICAST_IF`` for sending, ``IP_MULTICAST_TTL`` and ``IP_MULTICAST_LOOP``.
``IP_MULTICAST_ALL`` is cleared so a socket receives only the groups *it* joined, not every group some
other socket on the host joined.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
import time
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

log = logging.getLogger(__name__)

IP_MULTICAST_ALL = getattr(socket, "IP_MULTICAST_ALL", 49)  # Linux <linux/in.h>


class GroupConfig(BaseModel):
    """Where a multicast channel lives: group address, UDP port and the local interface address to use."""

    model_config = ConfigDict(extra="forbid")

    group: str = "239.255.40.1"
    port: int = Field(7400, ge=1, le=65535)
    iface_addr: str = (
        "0.0.0.0"  # local address of the interface to join on / send from; 0.0.0.0: kernel's choice
    )
    ttl: int = Field(8, ge=0, le=255)
    loop: bool = True  # IP_MULTICAST_LOOP: local sockets (same host/namespace) also receive what we send

    @field_validator("group")
    @classmethod
    def _is_multicast(cls, v: str) -> str:
        if not ipaddress.IPv4Address(v).is_multicast:
            raise ValueError(f"{v} is not an IPv4 multicast address (224.0.0.0/4)")
        return v

    @field_validator("iface_addr")
    @classmethod
    def _is_ipv4(cls, v: str) -> str:
        ipaddress.IPv4Address(v)
        return v


def open_group_socket(cfg: GroupConfig, *, join: bool = True, blocking: bool = False) -> socket.socket:
    """A UDP socket bound to (group, port), member of the group on ``cfg.iface_addr`` when ``join``."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
        s.bind((cfg.group, cfg.port))
        iface = socket.inet_aton(cfg.iface_addr)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, iface)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, cfg.ttl)
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1 if cfg.loop else 0)
        if join:
            mreq = struct.pack("4s4s", socket.inet_aton(cfg.group), iface)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.setblocking(blocking)
    except OSError:
        s.close()
        raise
    return s


class Endpoint(Protocol):
    """What :class:`EndpointRunner` and the simulated network drive."""

    def datagram_received(self, data: bytes, addr: tuple[str, int] | None = None) -> None: ...

    def poll(self) -> float | None: ...


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, runner: EndpointRunner) -> None:
        self.runner = runner

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.runner.endpoint.datagram_received(data, addr)
        except Exception:  # noqa: BLE001 - an engine bug must not kill the service; it is logged
            log.exception("datagram handler failed")
        self.runner.kick()

    def error_received(self, exc: Exception) -> None:
        log.warning("socket error: %s", exc)


class EndpointRunner:
    """Drive a sans-I/O endpoint from a group socket in the running asyncio loop.

    Construct it, pass :meth:`transmit` to the endpoint as its ``transmit`` callable, then ``await run(stop)``.
    Call :meth:`kick` after handing the endpoint new work (e.g. a push) so it is polled at once.
    """

    def __init__(self, cfg: GroupConfig, dest: tuple[str, int] | None = None) -> None:
        self.cfg = cfg
        #: where :meth:`transmit` sends; default the group. A unicast (address, port) sends feedback
        #: (NACKs) straight to the sender, as NORM permits (RFC 5740: NACKs may be unicast to the
        #: sender); needed when the group is a static single-source tree carrying only the sender's packets.
        self.dest = dest or (cfg.group, cfg.port)
        self.endpoint: Endpoint | None = None  # type: ignore[assignment]
        self._transport: asyncio.DatagramTransport | None = None
        self._kick = asyncio.Event()
        self._pending: list[bytes] = []
        self.clock = time.monotonic

    def transmit(self, data: bytes) -> None:
        if self._transport is None:
            self._pending.append(data)
            return
        try:
            self._transport.sendto(data, self.dest)
        except OSError as e:  # e.g. no route yet: the protocol's timers retry
            log.warning("send to %s failed: %s", self.dest, e)

    def kick(self) -> None:
        self._kick.set()

    async def run(
        self, endpoint: Endpoint, stop: asyncio.Event, *, join: bool = True, unicast_port: int | None = None
    ) -> None:
        """Drive ``endpoint`` until ``stop``; with ``unicast_port`` also feed it the datagrams sent to
        ``(cfg.iface_addr, unicast_port)`` (unicast feedback from receivers)."""
        self.endpoint = endpoint
        loop = asyncio.get_running_loop()
        sock = open_group_socket(self.cfg, join=join)
        transport, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), sock=sock)
        self._transport = transport  # type: ignore[assignment]
        feedback: asyncio.DatagramTransport | None = None
        if unicast_port is not None:
            try:
                feedback, _ = await loop.create_datagram_endpoint(
                    lambda: _Proto(self), local_addr=(self.cfg.iface_addr, unicast_port), reuse_port=True
                )
            except OSError:
                transport.close()
                self._transport = None
                raise
        for d in self._pending:
            self.transmit(d)
        self._pending.clear()
        stop_task = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                try:
                    deadline = endpoint.poll()
                except Exception:  # noqa: BLE001
                    log.exception("poll failed")
                    deadline = self.clock() + 0.1
                timeout = None if deadline is None else max(0.0, deadline - self.clock())
                if timeout == 0.0:
                    await asyncio.sleep(0)  # let the socket be read between bursts
                    continue
                self._kick.clear()
                kick_task = asyncio.ensure_future(self._kick.wait())
                await asyncio.wait(
                    {kick_task, stop_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                kick_task.cancel()
        finally:
            stop_task.cancel()
            transport.close()
            if feedback is not None:
                feedback.close()
            self._transport = None
