"""Userspace link emulator: a delay line (plus random loss and tail drop) between two interfaces.

This kernel has no ``sch_netem``, so cdnlab emulates propagation delay the way netem does it
(S. Hemminger, "Network Emulation with NetEm", linux.conf.au 2005) but in a process: every Ethernet
frame read from one interface is stamped with ``deadline = arrival + delay`` and appended to a FIFO; a
``timerfd`` (CLOCK_MONOTONIC, absolute expiry, see timerfd_create(2)) is armed for the earliest deadline
of both directions, and on expiry every due frame is written to the other interface. Frames are never
reordered (one FIFO per direction, constant delay). Rate limiting is not done here: :mod:`testbed.net.links`
puts an HTB qdisc on this process's egress interfaces, which is where the bottleneck queue forms.

Run as ``python -m testbed.net.relay --a IFA --b IFB --delay-ms D [--delay-ms-ba D2] --loss-pct L
--queue-pkts Q --seed S`` inside the network namespace holding IFA and IFB (made by ``mnexec -n``; the
namespace dies with this process). Frames a→b are delayed by D, b→a by D2 (default D).

* Sockets: AF_PACKET/SOCK_RAW bound with ETH_P_ALL (packet(7)); our own transmissions are ignored via
  ``PACKET_IGNORE_OUTGOING`` and, as a fallback, by the PACKET_OUTGOING packet type.
* VLAN: the kernel strips 802.1Q/802.1ad tags into skb metadata before packet sockets see a frame, so
  the tag is rebuilt from ``PACKET_AUXDATA`` (``tp_vlan_tci``/``tp_vlan_tpid``), as libpcap does.
  Every ethertype (LLDP, ARP, IPv6, ...) passes unchanged.
* Loss: Bernoulli with a seeded :class:`random.Random` (reproducible). Tail drop when a direction's
  FIFO holds ``--queue-pkts`` frames.
* Life cycle: ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` so the relay (and with it its namespace and veths)
  dies with the process that started it; SIGTERM/SIGINT end it cleanly and it logs its counters.
* Keeping up: SIGUSR1 logs the counters so far (``"final": false``). Besides frames and drops they say
  whether the relay kept up: ``late_frames`` (sent more than max(1 ms, 2 % of the delay) after their
  deadline), ``max_late_us`` (the worst of those), and ``socket_drops`` (frames the kernel dropped because
  the relay did not read them in time, ``PACKET_STATISTICS``).
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import errno
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

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
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
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
    """One direction of the link: its FIFO of (deadline_ns, frame), its parameters and its counters."""

    __slots__ = (
        "name",
        "delay_ns",
        "loss",
        "limit",
        "q",
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


def run(args: argparse.Namespace) -> dict:
    """The event loop; returns the counters when stopped."""
    rng = random.Random(args.seed)
    rand = rng.random
    sa, sb = open_socket(args.a), open_socket(args.b)
    ab = Direction(f"{args.a}->{args.b}", args.delay_ms, args.loss_pct, args.queue_pkts)
    delay_ba = args.delay_ms if args.delay_ms_ba is None else args.delay_ms_ba
    ba = Direction(f"{args.b}->{args.a}", delay_ba, args.loss_pct, args.queue_pkts)
    timer = Timer()
    ep = select.epoll()
    fa, fb, ft = sa.fileno(), sb.fileno(), timer.fd
    ep.register(fa, select.EPOLLIN)
    ep.register(fb, select.EPOLLIN)
    ep.register(ft, select.EPOLLIN)
    # (input socket, direction it feeds, output socket)
    route = {fa: (sa, ab, sb), fb: (sb, ba, sa)}
    buf = bytearray(FRAME_MAX)
    mv = memoryview(buf)
    bufs = [buf]
    anc_size = socket.CMSG_SPACE(20) + socket.CMSG_SPACE(16)
    unpack_ts = struct.Struct("=qq").unpack
    wall_ns = time.time_ns
    early = int(args.early_us * 1000)
    vlan_byte = 0 if sys.byteorder == "little" else 3  # the byte of tp_status holding bit 4
    now_ns = time.monotonic_ns
    pack_tag = struct.Struct("!HH").pack
    unpack_aux = struct.Struct("=IIIHHHH").unpack
    errors: collections.Counter[str] = collections.Counter()

    def snapshot(final: bool) -> dict:
        ab.sock_drops += socket_drops(sa)  # frames for a->b the kernel dropped before we read them
        ba.sock_drops += socket_drops(sb)
        return {"a_to_b": ab.counters(), "b_to_a": ba.counters(), "errors": dict(errors), "final": final}

    def on_usr1(signum, frame) -> None:  # noqa: ARG001 - the counters so far, while running
        print("relay: counters " + json.dumps(snapshot(False), sort_keys=True), flush=True)

    signal.signal(signal.SIGUSR1, on_usr1)
    print(f"relay: READY a={args.a} b={args.b} pid={os.getpid()}", flush=True)

    def flush(d: Direction, out: socket.socket, t: int) -> None:
        q = d.q
        send = out.send
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
                errors[errno.errorcode.get(e.errno, str(e.errno))] += 1

    try:
        while True:
            events = ep.poll()
            mono = now_ns()
            off = wall_ns() - mono  # CLOCK_REALTIME - CLOCK_MONOTONIC, to read the kernel's rx stamps
            for fd, ev in events:
                if fd == ft:
                    timer.clear()
                    continue
                s, d, out = route[fd]
                q = d.q
                for _ in range(BATCH):
                    try:
                        n, anc, flags, addr = s.recvmsg_into(bufs, anc_size)
                    except BlockingIOError:
                        break
                    except OSError as e:  # ENETDOWN after the interface went down: keep serving
                        errors["rx_" + errno.errorcode.get(e.errno, str(e.errno))] += 1
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
                            out.send(frame)
                            d.tx += 1
                            d.bytes += n
                        except OSError as e:
                            d.txerr += 1
                            errors[errno.errorcode.get(e.errno, str(e.errno))] += 1
                    else:
                        # the kernel's receive stamp, unless a clock step made it implausible
                        t = now_ns()
                        if arrival > t or arrival < t - 1_000_000_000:
                            arrival = t
                        q.append((arrival + d.delay_ns, frame))
                if ev & (select.EPOLLERR | select.EPOLLHUP):
                    try:  # collect the pending socket error (ENETDOWN) so epoll stops reporting it
                        s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    except OSError:
                        pass
            t = now_ns()
            te = t + early
            if ab.q and ab.q[0][0] <= te:
                flush(ab, sb, t)
            if ba.q and ba.q[0][0] <= te:
                flush(ba, sa, t)
            ha = ab.q[0][0] if ab.q else 0
            hb = ba.q[0][0] if ba.q else 0
            nxt = (ha if ha < hb else hb) if ha and hb else (ha or hb)
            if nxt and early:
                nxt -= early
            if nxt != timer.armed:
                timer.arm(nxt)
    except Stop:
        pass
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    return snapshot(True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m testbed.net.relay", description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="first interface (in this namespace)")
    ap.add_argument("--b", required=True, help="second interface")
    ap.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay a->b (ms)")
    ap.add_argument(
        "--delay-ms-ba", type=float, default=None, help="one-way delay b->a (ms; default: --delay-ms)"
    )
    ap.add_argument("--loss-pct", type=float, default=0.0, help="random loss per direction (%%)")
    ap.add_argument("--queue-pkts", type=int, default=10000, help="FIFO limit per direction (tail drop)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the loss RNG")
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
    if args.rt_priority > 0:
        try:  # the kernel's RT throttling (sched_rt_runtime_us) still leaves 5 % to everyone else
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(args.rt_priority))
        except OSError as e:
            print(f"relay: SCHED_FIFO not available ({e}); timing may be late on a busy CPU", flush=True)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        wait_for_interfaces([args.a, args.b], args.wait_s)
        started = time.monotonic()
        counters = run(args)
    except Stop:
        return 0
    counters["seconds"] = round(time.monotonic() - started, 3)
    print("relay: counters " + json.dumps(counters, sort_keys=True), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
