"""Userspace link emulator: delay lines (plus random loss and tail drop) between pairs of interfaces.

This kernel has no ``sch_netem``, so cdnlab emulates propagation delay the way netem does it
(S. Hemminger, "Network Emulation with NetEm", linux.conf.au 2005) but in a process: every Ethernet
frame read from one interface is stamped with ``deadline = arrival + delay`` and appended to a FIFO; a
``timerfd`` (CLOCK_MONOTONIC, absolute expiry, see timerfd_create(2)) is armed for the earliest deadline
of all FIFOs (a heap of their heads), and on expiry every due frame is written to the other interface.
Frames are never reordered (one FIFO per direction, constant delay). Rate limiting is not done here:
:mod:`testbed.net.links` puts an HTB qdisc on this process's egress interfaces, which is where the
bottleneck queue forms.

One process serves any number of links (:class:`Relay`), so the cost of link emulation does not grow by a
process per link: :mod:`testbed.net.relay_pool` runs one per CPU. Run as ``python -m testbed.net.relay
--control-fd FD`` inside a network namespace of its own (``mnexec -n``; the namespace dies with this
process) and add links over the control socket, or as ``python -m testbed.net.relay --a IFA --b IFB
--delay-ms D [--delay-ms-ba D2] --loss-pct L --queue-pkts Q --seed S`` for one link from the start.
Frames a→b are delayed by D, b→a by D2 (default D). On another server of a run across several the relay
is started over ssh and takes its requests on standard input (``--control-stdio``; :class:`StdioControl`).

* Sockets: AF_PACKET/SOCK_RAW bound with ETH_P_ALL (packet(7)); our own transmissions are ignored via
  ``PACKET_IGNORE_OUTGOING`` and, as a fallback, by the PACKET_OUTGOING packet type.
* VLAN: the kernel strips 802.1Q/802.1ad tags into skb metadata before packet sockets see a frame, so
  the tag is rebuilt from ``PACKET_AUXDATA`` (``tp_vlan_tci``/``tp_vlan_tpid``), as libpcap does.
  Every ethertype (LLDP, ARP, IPv6, ...) passes unchanged.
* Loss: Bernoulli with a seeded :class:`random.Random` (reproducible). Tail drop when a direction's
  FIFO holds ``--queue-pkts`` frames.
* Life cycle: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` so the relay (and with it its namespace and veths)
  dies with the process that started it; SIGTERM/SIGINT end it cleanly and it logs its counters.
* Keeping up: each link's counters (the ``counters`` request; SIGUSR1 logs them all) say so
  (``"final": false`` while it runs). Besides frames and drops they say
  whether the relay kept up: ``late_frames`` (sent more than max(1 ms, 2 % of the delay) after their
  deadline), ``max_late_us`` (the worst of those), and ``socket_drops`` (frames the kernel dropped because
  the relay did not read them in time, ``PACKET_STATISTICS``).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import errno
import heapq
import itertools
import json
import math
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 1 << 4
TP_STATUS_VLAN_TPID_VALID = 1 << 6
CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1
PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29
SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SO_TIMESTAMPNS = 35
BUF_BYTES = 8 * 1024 * 1024
FRAME_MAX = 65536 + 64
PACKET_STATISTICS = 6
LATE_NS = 1_000_000  # a frame sent more than max(1 ms, 2 % of the delay) after its deadline counts as late
LATE_FRACTION = 0.02
COUNTERS_PREFIX = "relay: counters "  # a log line holding one link's counters as JSON
BATCH = 512  # frames read from one socket per wake-up before the other sources get a turn

_libc = ctypes.CDLL(None, use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc.timerfd_create.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.timerfd_settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class Timer:
    """A CLOCK_MONOTONIC timerfd armed with absolute deadlines in nanoseconds (0 disarms it)."""

    def __init__(self) -> None:
        fd = _libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"timerfd_create: {os.strerror(e)}")
        self.fd = fd
        self._spec = _Itimerspec()
        self._ref = ctypes.byref(self._spec)
        self.armed = 0

    def arm(self, deadline_ns: int) -> None:
        v = self._spec.it_value
        if deadline_ns <= 0:
            v.tv_sec = v.tv_nsec = 0  # disarm
        else:
            v.tv_sec, v.tv_nsec = divmod(deadline_ns, 1_000_000_000)
        if _libc.timerfd_settime(self.fd, TFD_TIMER_ABSTIME, self._ref, None) < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"timerfd_settime: {os.strerror(e)}")
        self.armed = deadline_ns

    def clear(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:
            pass


def realtime_offset_ns(
    wall_ns: Callable[[], int], mono_ns: Callable[[], int], tries: int = 4, tight_ns: int = 20_000
) -> int:
    """CLOCK_REALTIME minus CLOCK_MONOTONIC, from the tightest of a few bracketed readings.

    The kernel stamps a received frame with CLOCK_REALTIME (SO_TIMESTAMPNS) and the delay line runs on
    CLOCK_MONOTONIC. Reading the two clocks one after the other over-estimates the offset by however long
    the process was paused between the reads, and that error releases a frame early by as much. Under
    QEMU's TCG a pause of milliseconds happens. So the wall clock is read between two monotonic readings
    and the reading with the smallest bracket wins: its error is at most half that bracket.
    """
    best_width, best = -1, 0
    for _ in range(max(1, tries)):
        m0 = mono_ns()
        w = wall_ns()
        m1 = mono_ns()
        width = m1 - m0
        if best_width < 0 or width < best_width:
            best_width, best = width, w - (m0 + m1) // 2
        if width <= tight_ns:
            break
    return best


def set_pdeathsig(expected_parent: int | None) -> None:
    """Die with SIGKILL when the parent dies; exit now if it already has (the race before prctl)."""
    if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"prctl(PR_SET_PDEATHSIG): {os.strerror(e)}")
    _libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)  # 1 ns timer slack: wake-ups on time
    ppid = os.getppid()
    if ppid == 1 or (expected_parent is not None and ppid != expected_parent):
        sys.stderr.write(f"relay: parent {expected_parent} already gone (ppid now {ppid}); exiting\n")
        sys.exit(3)


class Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave the event loop."""


def _on_signal(signum, frame) -> None:  # noqa: ARG001
    raise Stop(signum)


def wait_for_interfaces(names: list[str], timeout_s: float) -> None:
    """Wait until every interface exists in this namespace (the builder moves them in after we start)."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = []
        for n in names:
            try:
                socket.if_nametoindex(n)
            except OSError:
                missing.append(n)
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise SystemExit(f"relay: interfaces {missing} did not appear within {timeout_s:.0f}s")
        time.sleep(0.005)


def open_socket(ifname: str) -> socket.socket:
    """A non-blocking AF_PACKET/SOCK_RAW socket receiving every frame of ``ifname`` (not our own)."""
    # protocol 0: no receive hook until bind, so bind need not unhook one first (that waits for an RCU grace
    # period, synchronize_net(), about 12 ms a socket: a quarter of a second for every ten links)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    for opt, fallback in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, BUF_BYTES)
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, fallback, BUF_BYTES)
    s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)  # kernel receive time (CLOCK_REALTIME)
    try:
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass  # old kernel: the PACKET_OUTGOING check below does the job
    s.bind((ifname, ETH_P_ALL))
    s.setblocking(False)
    return s


class Direction:
    """One direction of a link: its FIFO of (deadline_ns, frame), its parameters and its counters."""

    __slots__ = (
        "name",
        "delay_ns",
        "loss",
        "limit",
        "q",
        "out",
        "errors",
        "dead",
        "rx",
        "tx",
        "lost",
        "qdrop",
        "txerr",
        "vlan",
        "bytes",
        "late",
        "late_limit",
        "late_frames",
        "max_late",
        "sock_drops",
    )

    def __init__(self, name: str, delay_ms: float, loss_pct: float, limit: int) -> None:
        self.name = name
        self.delay_ns = int(round(delay_ms * 1e6))
        self.loss = loss_pct / 100.0
        self.limit = limit
        self.q: collections.deque[tuple[int, bytes]] = collections.deque()
        self.out: socket.socket | None = None  # where this direction's frames are sent
        self.errors: collections.Counter[str] = collections.Counter()  # its link's send/receive errors
        self.dead = False  # its link was removed: a stale timer-heap entry is skipped
        self.rx = self.tx = self.lost = self.qdrop = self.txerr = self.vlan = self.bytes = self.late = 0
        # a frame sent later than this after its deadline is late: the relay fell behind
        self.late_limit = max(LATE_NS, int(self.delay_ns * LATE_FRACTION))
        self.late_frames = self.max_late = self.sock_drops = 0

    def counters(self) -> dict[str, float]:
        return {
            "rx": self.rx,
            "tx": self.tx,
            "lost": self.lost,
            "queue_drop": self.qdrop,
            "tx_error": self.txerr,
            "vlan_rebuilt": self.vlan,
            "tx_bytes": self.bytes,
            "queued": len(self.q),
            "mean_late_us": round(self.late / self.tx / 1000, 1) if self.tx else 0.0,
            "late_frames": self.late_frames,
            "max_late_us": round(self.max_late / 1000, 1),
            "socket_drops": self.sock_drops,
        }


def socket_drops(s: socket.socket) -> int:
    """Frames the kernel dropped because this packet socket's receive buffer was full, since the last call
    (``PACKET_STATISTICS`` resets on read, packet(7)); 0 if the kernel cannot say."""
    try:
        _packets, drops = struct.unpack("II", s.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
    except OSError:
        return 0
    return drops


@dataclass(frozen=True)
class LinkConfig:
    """One link a relay serves: frames a->b are delayed by ``delay_ms``, b->a by ``delay_ms_ba``."""

    id: int
    a: str
    b: str
    delay_ms: float = 0.0
    delay_ms_ba: float | None = None
    loss_pct: float = 0.0
    queue_pkts: int = 10000
    seed: int = 1

    @classmethod
    def from_request(cls, req: dict[str, Any]) -> LinkConfig:
        """Validate an ``add`` request; ValueError names the bad field."""
        known = {f for f in cls.__dataclass_fields__}
        extra = sorted(set(req) - known - {"op"})
        if extra:
            raise ValueError(f"unknown field(s) {extra}")
        for key in ("id", "a", "b"):
            if key not in req:
                raise ValueError(f"missing field {key!r}")
        if not isinstance(req["id"], int) or isinstance(req["id"], bool):
            raise ValueError(f"id must be an integer, not {req['id']!r}")
        for key in ("a", "b"):
            v = req[key]
            if not isinstance(v, str) or not 0 < len(v) < 16 or "/" in v:
                raise ValueError(f"{key} must be an interface name, not {v!r}")
        nums = {}
        for key in ("delay_ms", "delay_ms_ba", "loss_pct"):
            v = req.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{key} must be a number >= 0, not {v!r}")
            nums[key] = float(v)
        if nums.get("loss_pct", 0.0) > 100:
            raise ValueError(f"loss_pct must be within 0..100, not {nums['loss_pct']!r}")
        for key, low in (("queue_pkts", 1), ("seed", None)):
            v = req.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low):
                raise ValueError(f"{key} must be an integer{' >= 1' if low else ''}, not {v!r}")
            nums[key] = v
        return cls(id=req["id"], a=req["a"], b=req["b"], **nums)


class RelayedLink:
    """One link: two packet sockets and a :class:`Direction` each way."""

    def __init__(self, cfg: LinkConfig) -> None:
        self.cfg = cfg
        self.rand = random.Random(cfg.seed).random
        self.sa = open_socket(cfg.a)
        try:
            self.sb = open_socket(cfg.b)
        except OSError:
            self.sa.close()
            raise
        self.ab = Direction(f"{cfg.a}->{cfg.b}", cfg.delay_ms, cfg.loss_pct, cfg.queue_pkts)
        delay_ba = cfg.delay_ms if cfg.delay_ms_ba is None else cfg.delay_ms_ba
        self.ba = Direction(f"{cfg.b}->{cfg.a}", delay_ba, cfg.loss_pct, cfg.queue_pkts)
        self.ab.out, self.ba.out = self.sb, self.sa
        self.errors: collections.Counter[str] = collections.Counter()
        self.ab.errors = self.ba.errors = self.errors
        self.started = time.monotonic()

    def snapshot(self, final: bool) -> dict:
        self.ab.sock_drops += socket_drops(self.sa)  # frames for a->b the kernel dropped before we read them
        self.ba.sock_drops += socket_drops(self.sb)
        return {
            "a_to_b": self.ab.counters(),
            "b_to_a": self.ba.counters(),
            "errors": dict(self.errors),
            "final": final,
            "seconds": round(time.monotonic() - self.started, 3),
        }

    def close(self) -> None:
        self.ab.dead = self.ba.dead = True
        self.sa.close()
        self.sb.close()


class StdioControl:
    """The control channel on standard input and output, for a relay started over ssh on another server of a
    run across several (``--control-stdio``): the requests come in on fd 0, the answers go out on a copy of
    fd 1, and fd 1 itself then points at stderr, so the relay's own messages never mix with its answers. The
    methods are those of the socket the relay otherwise reads."""

    def __init__(self) -> None:
        sys.stdout.flush()
        self.out = os.dup(1)
        os.dup2(2, 1)

    def fileno(self) -> int:
        return 0

    def recv(self, n: int) -> bytes:
        return os.read(0, n)  # BlockingIOError when non-blocking and nothing is there, as a socket's

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.out, view):]

    def setblocking(self, flag: bool) -> None:
        os.set_blocking(0, flag)


class Relay:
    """The event loop of one relay process, serving any number of links.

    Each link's two sockets are in one epoll set. A heap holds, for every direction whose FIFO is not
    empty, the deadline of its head frame (FIFOs keep their order, so the head changes only when it is
    sent); one timerfd is armed for the earliest. A process thus serves many links at the cost of one
    heap operation per frame, and each link keeps its own counters.

    Control (``--control-fd``): requests are JSON lines on a stream socket, each answered by one JSON line
    (``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``): ``add`` (a :class:`LinkConfig`; its
    interfaces must exist in this namespace), ``remove`` (``id``; answers the link's final counters),
    ``counters`` (``ids``, or all) and ``ping``. A malformed request is answered with an error and the relay
    keeps serving. The relay exits when the control socket closes (its owner is gone).
    """

    def __init__(self, early_us: float = 50.0) -> None:
        self.links: dict[int, RelayedLink] = {}
        self.route: dict[int, tuple[socket.socket, Direction, RelayedLink]] = {}
        self.heap: list[tuple[int, int, Direction]] = []
        self.seq = itertools.count()
        self.timer = Timer()
        self.ep = select.epoll()
        self.ep.register(self.timer.fd, select.EPOLLIN)
        self.early = int(early_us * 1000)
        self.control: socket.socket | StdioControl | None = None
        self.realtime: bool | None = None  # SCHED_FIFO: granted, refused, or not asked for
        self.control_buf = b""
        self.closing = False

    # -- links ----------------------------------------------------------------------------------
    def add(self, cfg: LinkConfig) -> RelayedLink:
        if cfg.id in self.links:
            raise ValueError(f"link {cfg.id} is already relayed")
        ln = RelayedLink(cfg)
        self.links[cfg.id] = ln
        for s, d in ((ln.sa, ln.ab), (ln.sb, ln.ba)):
            self.route[s.fileno()] = (s, d, ln)
            self.ep.register(s.fileno(), select.EPOLLIN)
        return ln

    def remove(self, link_id: int) -> dict:
        ln = self.links.pop(link_id, None)
        if ln is None:
            raise ValueError(f"no link {link_id!r}")
        snap = ln.snapshot(True)
        for s in (ln.sa, ln.sb):
            self.route.pop(s.fileno(), None)
            try:
                self.ep.unregister(s.fileno())
            except OSError:
                pass
        ln.close()
        return snap

    def all_counters(self, final: bool = False) -> dict[int, dict]:
        return {i: ln.snapshot(final) for i, ln in self.links.items()}

    # -- control --------------------------------------------------------------------------------
    def attach_control(self, fd: int | StdioControl) -> None:
        """Serve requests on ``fd`` (a connected stream socket) or on standard input and output."""
        self.control = fd if isinstance(fd, StdioControl) else socket.socket(fileno=fd)
        assert self.control is not None
        self.control.setblocking(False)
        self.ep.register(self.control.fileno(), select.EPOLLIN)

    def handle(self, line: bytes) -> dict:
        """One control request to its answer (never raises for bad input)."""
        try:
            req = json.loads(line)
        except ValueError as e:
            return {"ok": False, "error": f"not JSON: {e}"}
        if not isinstance(req, dict):
            return {"ok": False, "error": "a request must be a JSON object"}
        seq = req.pop("seq", None)  # echoed, so an answer that came too late is never taken for the next one
        answer = self._answer(req)
        if seq is not None:
            answer["seq"] = seq
        return answer

    def _answer(self, req: dict[str, Any]) -> dict:
        op = req.get("op")
        try:
            if op == "add":
                cfg = LinkConfig.from_request(req)
                self.add(cfg)
                return {"ok": True, "id": cfg.id}
            if op == "remove":
                return {"ok": True, "id": req.get("id"), "counters": self.remove(req.get("id"))}
            if op == "counters":
                ids = req.get("ids")
                if ids is None:
                    ids = list(self.links)
                if not isinstance(ids, list):
                    raise ValueError(f"ids must be a list, not {ids!r}")
                got = {str(i): self.links[i].snapshot(False) for i in ids if i in self.links}
                return {"ok": True, "counters": got, "missing": [i for i in ids if i not in self.links]}
            if op == "ping":
                return {"ok": True, "links": len(self.links), "pid": os.getpid(), "realtime": self.realtime}
            return {"ok": False, "error": f"unknown op {op!r} (add, remove, counters, ping)"}
        except (ValueError, TypeError) as e:
            return {"ok": False, "error": f"{op}: {e}"}
        except OSError as e:
            return {"ok": False, "error": f"{op}: {e.strerror or e}"}

    def on_control(self) -> None:
        assert self.control is not None
        while True:
            try:
                chunk = self.control.recv(65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.closing = True  # the owner closed its end (or died): nothing left to serve
                return
            self.control_buf += chunk
        while b"\n" in self.control_buf:
            line, self.control_buf = self.control_buf.split(b"\n", 1)
            if line.strip():
                answer = json.dumps(self.handle(line), sort_keys=True).encode() + b"\n"
                self.control.setblocking(True)
                try:
                    self.control.sendall(answer)
                except OSError:
                    self.closing = True
                finally:
                    self.control.setblocking(False)
        if len(self.control_buf) > 1 << 20:  # a line of a megabyte is not a request
            self.control_buf = b""

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> None:
        """Serve until :class:`Stop` (SIGTERM/SIGINT) or the control socket closes."""
        heap = self.heap
        push, pop = heapq.heappush, heapq.heappop
        seq = self.seq
        timer = self.timer
        ft = timer.fd
        fc = self.control.fileno() if self.control is not None else -1
        route = self.route
        buf = bytearray(FRAME_MAX)
        mv = memoryview(buf)
        bufs = [buf]
        anc_size = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(16)
        unpack_ts = struct.Struct("=qq").unpack
        wall_ns = time.time_ns
        early = self.early
        vlan_byte = 0 if sys.byteorder == "little" else 3  # the byte of tp_status holding bit 4
        now_ns = time.monotonic_ns
        pack_tag = struct.Struct("!HH").pack
        unpack_aux = struct.Struct("=IIIHHHH").unpack

        def flush(d: Direction, t: int) -> None:
            q = d.q
            send = d.out.send  # type: ignore[union-attr]
            te = t + early
            while q and q[0][0] <= te:
                deadline, frame = q.popleft()
                lateness = t - deadline
                d.late += lateness
                if lateness > d.late_limit:
                    d.late_frames += 1
                    if lateness > d.max_late:
                        d.max_late = lateness
                try:
                    send(frame)
                    d.tx += 1
                    d.bytes += len(frame)
                except OSError as e:  # ENOBUFS: the HTB queue is full; ENETDOWN/ENXIO: link down
                    d.txerr += 1
                    d.errors[errno.errorcode.get(e.errno, str(e.errno))] += 1

        while not self.closing:
            events = self.ep.poll()
            off = realtime_offset_ns(wall_ns, now_ns)  # to read the kernel's rx stamps on our clock
            for fd, ev in events:
                if fd == ft:
                    timer.clear()
                    continue
                if fd == fc:
                    self.on_control()
                    continue
                r = route.get(fd)
                if r is None:  # removed by a control request handled in this same batch
                    continue
                s, d, ln = r
                rand = ln.rand
                q = d.q
                for _ in range(BATCH):
                    try:
                        n, anc, flags, addr = s.recvmsg_into(bufs, anc_size)
                    except BlockingIOError:
                        break
                    except OSError as e:  # ENETDOWN after the interface went down: keep serving
                        ln.errors["rx_" + errno.errorcode.get(e.errno, str(e.errno))] += 1
                        break
                    if addr[2] == PACKET_OUTGOING:
                        continue
                    d.rx += 1
                    if d.loss and rand() < d.loss:
                        d.lost += 1
                        continue
                    if len(q) >= d.limit:
                        d.qdrop += 1
                        continue
                    aux = None
                    arrival = 0
                    for level, _typ, data in anc:
                        if level == SOL_PACKET:
                            aux = data
                        elif len(data) >= 16:
                            sec, nsec = unpack_ts(data[:16])
                            arrival = sec * 1_000_000_000 + nsec - off
                    if aux is not None and aux[vlan_byte] & TP_STATUS_VLAN_VALID:
                        status, _l, _s, _m, _n, tci, tpid = unpack_aux(aux[:20])
                        if not status & TP_STATUS_VLAN_TPID_VALID or not tpid:
                            tpid = 0x8100
                        frame = bytes(mv[:12]) + pack_tag(tpid, tci) + bytes(mv[12:n])
                        d.vlan += 1
                    else:
                        frame = bytes(mv[:n])
                    if d.delay_ns == 0 and not q:
                        try:
                            d.out.send(frame)  # type: ignore[union-attr]
                            d.tx += 1
                            d.bytes += n
                        except OSError as e:
                            d.txerr += 1
                            ln.errors[errno.errorcode.get(e.errno, str(e.errno))] += 1
                    else:
                        # the kernel's receive stamp, unless a clock step made it implausible
                        t = now_ns()
                        if arrival > t or arrival < t - 1_000_000_000:
                            arrival = t
                        deadline = arrival + d.delay_ns
                        if not q:
                            push(heap, (deadline, next(seq), d))
                        q.append((deadline, frame))
                if ev & (select.EPOLLERR | select.EPOLLHUP):
                    try:  # collect the pending socket error (ENETDOWN) so epoll stops reporting it
                        s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    except OSError:
                        pass
            t = now_ns()
            te = t + early
            while heap and heap[0][0] <= te:
                d = pop(heap)[2]
                if d.dead or not d.q:
                    continue
                flush(d, t)
                if d.q:
                    push(heap, (d.q[0][0], next(seq), d))
            nxt = heap[0][0] - early if heap else 0
            if nxt <= 0 and heap:
                nxt = 1
            if nxt != timer.armed:
                timer.arm(nxt)


def serve(relay: Relay) -> None:
    """Run ``relay`` until stopped; SIGUSR1 logs every link's counters so far (one line per link)."""

    def on_usr1(signum, frame) -> None:  # noqa: ARG001 - the counters so far, while running
        for i, c in relay.all_counters().items():
            print(COUNTERS_PREFIX + json.dumps({"link": i, **c}, sort_keys=True), flush=True)

    signal.signal(signal.SIGUSR1, on_usr1)
    try:
        relay.run()
    except Stop:
        pass
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m testbed.net.relay", description=__doc__.split("\n")[0])
    ap.add_argument("--a", help="first interface of a link to serve from the start (in this namespace)")
    ap.add_argument("--b", help="second interface of that link")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay a->b (ms)")
    ap.add_argument(
        "--delay-ms-ba", type=float, default=None, help="one-way delay b->a (ms; default: --delay-ms)"
    )
    ap.add_argument("--loss-pct", type=float, default=0.0, help="random loss per direction (%%)")
    ap.add_argument("--queue-pkts", type=int, default=10000, help="FIFO limit per direction (tail drop)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the loss RNG")
    ap.add_argument(
        "--control-fd",
        type=int,
        default=None,
        help="a connected stream socket for add/remove/counters requests (JSON lines); the relay exits "
        "when it closes",
    )
    ap.add_argument(
        "--control-stdio",
        action="store_true",
        help="the same requests on standard input, answered on standard output (a relay on another server, "
        "started over ssh); its messages go to standard error; it exits when its input ends",
    )
    ap.add_argument(
        "--early-us",
        type=float,
        default=50.0,
        help="wake and send up to this much before the deadline (cancels the mean wake-up latency)",
    )
    ap.add_argument(
        "--rt-priority",
        type=int,
        default=1,
        help="SCHED_FIFO priority (0: normal scheduling); real-time wake-ups keep the delay exact on a busy CPU",
    )
    ap.add_argument("--parent-pid", type=int, default=None, help="exit at once if this is not our parent")
    ap.add_argument("--wait-s", type=float, default=15.0, help="how long to wait for the interfaces")
    args = ap.parse_args(argv)
    if (args.a is None) != (args.b is None):
        ap.error("--a and --b go together")
    if args.a is None and args.control_fd is None and not args.control_stdio:
        ap.error("give a link (--a and --b), a control socket (--control-fd or --control-stdio), or both")
    if args.control_fd is not None and args.control_stdio:
        ap.error("--control-fd and --control-stdio: one control channel")
    if args.delay_ms < 0 or (args.delay_ms_ba is not None and args.delay_ms_ba < 0):
        ap.error("delays must be >= 0")
    if not 0 <= args.loss_pct <= 100:
        ap.error("--loss-pct must be within 0..100")
    if args.queue_pkts < 1:
        ap.error("--queue-pkts must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # until the loop can answer it (a signal must not kill us)
    set_pdeathsig(args.parent_pid)
    realtime = None
    if args.rt_priority > 0:
        try:  # the kernel's RT throttling (sched_rt_runtime_us) still leaves 5 % to everyone else
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.rt_priority))
            realtime = True
        except OSError as e:
            realtime = False
            print(f"relay: SCHED_FIFO not available ({e}); timing may be late on a busy CPU", flush=True)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    relay = Relay(early_us=args.early_us)
    relay.realtime = realtime
    try:
        if args.a is not None:
            wait_for_interfaces([args.a, args.b], args.wait_s)
            relay.add(
                LinkConfig(0, args.a, args.b, args.delay_ms, args.delay_ms_ba, args.loss_pct,
                           args.queue_pkts, args.seed)
            )
        if args.control_fd is not None:
            relay.attach_control(args.control_fd)
        elif args.control_stdio:
            relay.attach_control(StdioControl())
    except Stop:
        return 0
    served = f"a={args.a} b={args.b} " if args.a else ""
    print(f"relay: READY {served}pid={os.getpid()}", flush=True)
    serve(relay)
    for i, counters in relay.all_counters(final=True).items():
        print(COUNTERS_PREFIX + json.dumps({"link": i, **counters}, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
